//! Criterion suites for the member's request path outside consensus: parameter decoding
//! and validation, command building, and rendering reads from the store. CI runs each once
//! (`cargo bench -- --test`); a real run sizes itself with criterion's defaults.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_main, Criterion};
use raft_kv::node::StateMachine;
use raft_kv::server::form::Form;
use raft_kv::server::keys_request::parse_keys_request;
use raft_kv::server::keyspace::new_store;
use raft_kv::server::member::KeySpace;

fn request_parsing(c: &mut Criterion) {
    let body = format!("value={}", "x".repeat(64));
    c.bench_function("server/parse_put_form", |b| {
        b.iter(|| {
            let mut form = Form::new();
            form.append_encoded(black_box(&body)).unwrap_or_default();
            form.append_encoded(black_box("prevExist=false"))
                .unwrap_or_default();
            black_box(parse_keys_request("PUT", "/bench/k12345", &form).is_ok())
        })
    });
}

fn store_path(c: &mut Criterion) {
    let (mut state_machine, keys) = new_store();
    let keys: Arc<_> = keys;
    for i in 0..1000u64 {
        let mut form = Form::new();
        form.append_encoded("value=0123456789abcdef")
            .unwrap_or_default();
        if let Ok(request) = parse_keys_request("PUT", &format!("/bench/k{i}"), &form) {
            let command = keys.write_command(&request, 1_700_000_000_000);
            let _ = state_machine.apply(i + 1, &command);
        }
    }
    c.bench_function("server/get_rendered", |b| {
        b.iter(|| black_box(keys.get(black_box("/bench/k500"), false, false)))
    });
    let mut form = Form::new();
    form.append_encoded("value=0123456789abcdef")
        .unwrap_or_default();
    let request = parse_keys_request("PUT", "/bench/k7", &form);
    c.bench_function("server/put_apply_render", |b| {
        let mut index = 10_000u64;
        b.iter(|| {
            index += 1;
            if let Ok(request) = &request {
                let command = keys.write_command(request, 1_700_000_000_000);
                let response = state_machine.apply(index, &command);
                black_box(keys.render_write(response, false));
            }
        })
    });
}

/// The suites (a private module: criterion's generated entry function needs no docs).
mod suites {
    use super::{request_parsing, store_path};
    criterion::criterion_group!(benches, request_parsing, store_path);
}

criterion_main!(suites::benches);
