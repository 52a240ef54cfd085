//! Golden scripts: one scenario per etcd v2 behaviour (spec/etcd-v2.md §3–§6, checked
//! against etcd 3.4.23). Each prints what the v2 server would answer: status and body.

mod store_support;

use store_support::run;

// ---------------------------------------------------------------------------------------
// §3 data model and §4.3 set
// ---------------------------------------------------------------------------------------

#[test]
fn set_new_key_is_201_without_prev_node() {
    run(r#"
> put /a one
201 {"action":"set","node":{"key":"/a","value":"one","modifiedIndex":1,"createdIndex":1}}
> index
1
"#);
}

#[test]
fn set_existing_key_returns_prev_node_and_resets_created_index() {
    run(r#"
> put /a one
201 {"action":"set","node":{"key":"/a","value":"one","modifiedIndex":1,"createdIndex":1}}
> put /a two
200 {"action":"set","node":{"key":"/a","value":"two","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/a","value":"one","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn empty_value_is_reported_as_empty_string() {
    run(r#"
> put /e
201 {"action":"set","node":{"key":"/e","value":"","modifiedIndex":1,"createdIndex":1}}
> get /e
200 {"action":"get","node":{"key":"/e","value":"","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn keys_are_cleaned_like_etcd() {
    run(r#"
> put /ts/ x
201 {"action":"set","node":{"key":"/ts","value":"x","modifiedIndex":1,"createdIndex":1}}
> get ts
200 {"action":"get","node":{"key":"/ts","value":"x","modifiedIndex":1,"createdIndex":1}}
> put //a/./b/../c y
201 {"action":"set","node":{"key":"/a/c","value":"y","modifiedIndex":2,"createdIndex":2}}
"#);
}

#[test]
fn unicode_and_special_characters_round_trip() {
    run(r#"
> put "/ключ 中文 sp&ce" "Hello 你好 & = + % / ? # \"q\" <tag>\nline2"
201 {"action":"set","node":{"key":"/ключ 中文 sp&ce","value":"Hello 你好 & = + % / ? # \"q\" <tag>\nline2","modifiedIndex":1,"createdIndex":1}}
> get "/ключ 中文 sp&ce"
200 {"action":"get","node":{"key":"/ключ 中文 sp&ce","value":"Hello 你好 & = + % / ? # \"q\" <tag>\nline2","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn implicit_directories_get_the_index_of_the_write() {
    run(r#"
> put /a/b/c v
201 {"action":"set","node":{"key":"/a/b/c","value":"v","modifiedIndex":1,"createdIndex":1}}
> get /a
200 {"action":"get","node":{"key":"/a","dir":true,"nodes":[{"key":"/a/b","dir":true,"modifiedIndex":1,"createdIndex":1}],"modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn directory_modified_index_ignores_children() {
    run(r#"
> put /d dir
201 {"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> put /d/x 1
201 {"action":"set","node":{"key":"/d/x","value":"1","modifiedIndex":2,"createdIndex":2}}
> delete /d/x
200 {"action":"delete","node":{"key":"/d/x","modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/d/x","value":"1","modifiedIndex":2,"createdIndex":2}}
> get /d
200 {"action":"get","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn set_dir_on_existing_file_replaces_it_with_an_empty_directory() {
    run(r#"
> put /f v
201 {"action":"set","node":{"key":"/f","value":"v","modifiedIndex":1,"createdIndex":1}}
> put /f dir
200 {"action":"set","node":{"key":"/f","dir":true,"modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/f","value":"v","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn set_on_existing_directory_is_not_a_file() {
    run(r#"
> put /d dir
201 {"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> put /d dir
403 {"errorCode":102,"message":"Not a file","cause":"/d","index":1}
> put /d x
403 {"errorCode":102,"message":"Not a file","cause":"/d","index":1}
> put /d prevExist=true x
403 {"errorCode":102,"message":"Not a file","cause":"/d","index":1}
> put /d x prevValue=y
403 {"errorCode":102,"message":"Not a file","cause":"/d","index":1}
> delete /d prevValue=y
403 {"errorCode":102,"message":"Not a file","cause":"/d","index":1}
"#);
}

#[test]
fn file_used_as_directory_is_not_a_directory() {
    run(r#"
> put /f file
201 {"action":"set","node":{"key":"/f","value":"file","modifiedIndex":1,"createdIndex":1}}
> put /f/child x
400 {"errorCode":104,"message":"Not a directory","cause":"/f","index":1}
> get /f/child
400 {"errorCode":104,"message":"Not a directory","cause":"/f","index":1}
> put /f/a/b dir
400 {"errorCode":104,"message":"Not a directory","cause":"/f","index":1}
> put /f/x prevExist=false
400 {"errorCode":104,"message":"Not a directory","cause":"/f","index":1}
> post /f job
400 {"errorCode":104,"message":"Not a directory","cause":"/f","index":1}
> delete /f/x
400 {"errorCode":104,"message":"Not a directory","cause":"/f","index":1}
"#);
}

#[test]
fn too_deep_keys_are_refused() {
    let deep: String = "/a".repeat(1025);
    let ok: String = "/a".repeat(1024);
    run(&format!(
        r#"
> put {deep} v
400 {{"errorCode":209,"message":"Invalid field","cause":"key has more than 1024 path segments","index":0}}
> put {ok} v
201 {{"action":"set","node":{{"key":"{ok}","value":"v","modifiedIndex":1,"createdIndex":1}}}}
"#
    ));
}

// ---------------------------------------------------------------------------------------
// §4.2 get
// ---------------------------------------------------------------------------------------

#[test]
fn get_missing_key_names_the_first_missing_component() {
    run(r#"
> put /x 1
201 {"action":"set","node":{"key":"/x","value":"1","modifiedIndex":1,"createdIndex":1}}
> get /nope
404 {"errorCode":100,"message":"Key not found","cause":"/nope","index":1}
> get /nodir/sub/key
404 {"errorCode":100,"message":"Key not found","cause":"/nodir","index":1}
"#);
}

#[test]
fn get_directory_lists_children_without_grandchildren() {
    run(r#"
> put /l/b 2
201 {"action":"set","node":{"key":"/l/b","value":"2","modifiedIndex":1,"createdIndex":1}}
> put /l/a 1
201 {"action":"set","node":{"key":"/l/a","value":"1","modifiedIndex":2,"createdIndex":2}}
> put /l/sub/c 3
201 {"action":"set","node":{"key":"/l/sub/c","value":"3","modifiedIndex":3,"createdIndex":3}}
> get /l
200 {"action":"get","node":{"key":"/l","dir":true,"nodes":[{"key":"/l/a","value":"1","modifiedIndex":2,"createdIndex":2},{"key":"/l/b","value":"2","modifiedIndex":1,"createdIndex":1},{"key":"/l/sub","dir":true,"modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}
> get /l recursive
200 {"action":"get","node":{"key":"/l","dir":true,"nodes":[{"key":"/l/a","value":"1","modifiedIndex":2,"createdIndex":2},{"key":"/l/b","value":"2","modifiedIndex":1,"createdIndex":1},{"key":"/l/sub","dir":true,"nodes":[{"key":"/l/sub/c","value":"3","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}
> get /l/a recursive
200 {"action":"get","node":{"key":"/l/a","value":"1","modifiedIndex":2,"createdIndex":2}}
"#);
}

#[test]
fn empty_directory_has_no_nodes_field() {
    run(r#"
> put /d dir
201 {"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> get /d recursive
200 {"action":"get","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn root_has_no_key_and_no_indexes() {
    run(r#"
> get /
200 {"action":"get","node":{"dir":true}}
> put /x 1
201 {"action":"set","node":{"key":"/x","value":"1","modifiedIndex":1,"createdIndex":1}}
> get /
200 {"action":"get","node":{"dir":true,"nodes":[{"key":"/x","value":"1","modifiedIndex":1,"createdIndex":1}]}}
"#);
}

#[test]
fn hidden_keys_are_left_out_of_listings_but_readable() {
    run(r#"
> put /d/_hidden h
201 {"action":"set","node":{"key":"/d/_hidden","value":"h","modifiedIndex":1,"createdIndex":1}}
> put /d/_hdir/x h
201 {"action":"set","node":{"key":"/d/_hdir/x","value":"h","modifiedIndex":2,"createdIndex":2}}
> put /d/v v
201 {"action":"set","node":{"key":"/d/v","value":"v","modifiedIndex":3,"createdIndex":3}}
> get /d recursive
200 {"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/v","value":"v","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}
> get /d/_hidden
200 {"action":"get","node":{"key":"/d/_hidden","value":"h","modifiedIndex":1,"createdIndex":1}}
> get /d/_hdir
200 {"action":"get","node":{"key":"/d/_hdir","dir":true,"nodes":[{"key":"/d/_hdir/x","value":"h","modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}}
"#);
}

// ---------------------------------------------------------------------------------------
// root is read only
// ---------------------------------------------------------------------------------------

#[test]
fn root_is_read_only() {
    run(r#"
> put / x
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> put / dir
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> put / x prevExist=true
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> put / x prevExist=false
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> put / x prevValue=y
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> delete /
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> delete / recursive
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> delete / dir
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":0}
> delete / prevValue=x
403 {"errorCode":102,"message":"Not a file","index":0}
"#);
}

// ---------------------------------------------------------------------------------------
// create, update, in-order
// ---------------------------------------------------------------------------------------

#[test]
fn create_fails_on_an_existing_key() {
    run(r#"
> put /c first prevExist=false
201 {"action":"create","node":{"key":"/c","value":"first","modifiedIndex":1,"createdIndex":1}}
> put /c second prevExist=false
412 {"errorCode":105,"message":"Key already exists","cause":"/c","index":1}
> get /c
200 {"action":"get","node":{"key":"/c","value":"first","modifiedIndex":1,"createdIndex":1}}
> put /d dir prevExist=false
201 {"action":"create","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":2}}
> put /d dir prevExist=false
412 {"errorCode":105,"message":"Key already exists","cause":"/d","index":2}
"#);
}

#[test]
fn update_keeps_created_index_and_needs_the_key() {
    run(r#"
> put /u old
201 {"action":"set","node":{"key":"/u","value":"old","modifiedIndex":1,"createdIndex":1}}
> put /u new prevExist=true
200 {"action":"update","node":{"key":"/u","value":"new","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/u","value":"old","modifiedIndex":1,"createdIndex":1}}
> put /missing x prevExist=true
404 {"errorCode":100,"message":"Key not found","cause":"/missing","index":2}
"#);
}

#[test]
fn update_without_value_blanks_the_value() {
    run(r#"
> put /u v
201 {"action":"set","node":{"key":"/u","value":"v","modifiedIndex":1,"createdIndex":1}}
> put /u prevExist=true ttl=30
200 {"action":"update","node":{"key":"/u","value":"","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/u","value":"v","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn in_order_keys_are_named_by_their_index() {
    run(r#"
> post /queue Job1
201 {"action":"create","node":{"key":"/queue/00000000000000000001","value":"Job1","modifiedIndex":1,"createdIndex":1}}
> post /queue Job2
201 {"action":"create","node":{"key":"/queue/00000000000000000002","value":"Job2","modifiedIndex":2,"createdIndex":2}}
> get /queue
200 {"action":"get","node":{"key":"/queue","dir":true,"nodes":[{"key":"/queue/00000000000000000001","value":"Job1","modifiedIndex":1,"createdIndex":1},{"key":"/queue/00000000000000000002","value":"Job2","modifiedIndex":2,"createdIndex":2}],"modifiedIndex":1,"createdIndex":1}}
> post /queue dir
201 {"action":"create","node":{"key":"/queue/00000000000000000003","dir":true,"modifiedIndex":3,"createdIndex":3}}
> post /queue t ttl=30
201 {"action":"create","node":{"key":"/queue/00000000000000000004","value":"t","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":4,"createdIndex":4}}
> post / top
201 {"action":"create","node":{"key":"/00000000000000000005","value":"top","modifiedIndex":5,"createdIndex":5}}
"#);
}

// ---------------------------------------------------------------------------------------
// §4.5 delete
// ---------------------------------------------------------------------------------------

#[test]
fn delete_file_keeps_created_index_and_drops_value() {
    run(r#"
> put /d v
201 {"action":"set","node":{"key":"/d","value":"v","modifiedIndex":1,"createdIndex":1}}
> delete /d
200 {"action":"delete","node":{"key":"/d","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","value":"v","modifiedIndex":1,"createdIndex":1}}
> get /d
404 {"errorCode":100,"message":"Key not found","cause":"/d","index":2}
> delete /d
404 {"errorCode":100,"message":"Key not found","cause":"/d","index":2}
"#);
}

#[test]
fn delete_directory_needs_dir_flag() {
    run(r#"
> put /d dir
201 {"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> delete /d
403 {"errorCode":102,"message":"Not a file","cause":"/d","index":1}
> delete /d dir
200 {"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn delete_non_empty_directory_needs_recursive() {
    run(r#"
> put /d/x 1
201 {"action":"set","node":{"key":"/d/x","value":"1","modifiedIndex":1,"createdIndex":1}}
> put /d/sub/y 2
201 {"action":"set","node":{"key":"/d/sub/y","value":"2","modifiedIndex":2,"createdIndex":2}}
> delete /d dir
403 {"errorCode":108,"message":"Directory not empty","cause":"/d","index":2}
> delete /d recursive
200 {"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> get /d/sub/y
404 {"errorCode":100,"message":"Key not found","cause":"/d","index":3}
> put /e/x 1
201 {"action":"set","node":{"key":"/e/x","value":"1","modifiedIndex":4,"createdIndex":4}}
> delete /e dir recursive
200 {"action":"delete","node":{"key":"/e","dir":true,"modifiedIndex":5,"createdIndex":4},"prevNode":{"key":"/e","dir":true,"modifiedIndex":4,"createdIndex":4}}
"#);
}

#[test]
fn delete_file_with_dir_flag_deletes_it() {
    run(r#"
> put /f v
201 {"action":"set","node":{"key":"/f","value":"v","modifiedIndex":1,"createdIndex":1}}
> delete /f dir
200 {"action":"delete","node":{"key":"/f","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/f","value":"v","modifiedIndex":1,"createdIndex":1}}
"#);
}

// ---------------------------------------------------------------------------------------
// compare-and-swap / compare-and-delete
// ---------------------------------------------------------------------------------------

#[test]
fn compare_and_swap_on_value() {
    run(r#"
> put /c one
201 {"action":"set","node":{"key":"/c","value":"one","modifiedIndex":1,"createdIndex":1}}
> put /c two prevValue=one
200 {"action":"compareAndSwap","node":{"key":"/c","value":"two","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/c","value":"one","modifiedIndex":1,"createdIndex":1}}
> put /c three prevValue=one
412 {"errorCode":101,"message":"Compare failed","cause":"[one != two]","index":2}
> get /c
200 {"action":"get","node":{"key":"/c","value":"two","modifiedIndex":2,"createdIndex":1}}
"#);
}

#[test]
fn compare_and_swap_on_index() {
    run(r#"
> put /c a
201 {"action":"set","node":{"key":"/c","value":"a","modifiedIndex":1,"createdIndex":1}}
> put /c b prevIndex=1
200 {"action":"compareAndSwap","node":{"key":"/c","value":"b","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/c","value":"a","modifiedIndex":1,"createdIndex":1}}
> put /c c prevIndex=1
412 {"errorCode":101,"message":"Compare failed","cause":"[1 != 2]","index":2}
> put /c c prevIndex=0
200 {"action":"set","node":{"key":"/c","value":"c","modifiedIndex":3,"createdIndex":3},"prevNode":{"key":"/c","value":"b","modifiedIndex":2,"createdIndex":1}}
"#);
}

#[test]
fn compare_and_swap_on_value_and_index_reports_both() {
    run(r#"
> put /c v
201 {"action":"set","node":{"key":"/c","value":"v","modifiedIndex":1,"createdIndex":1}}
> put /c w prevValue=x prevIndex=7
412 {"errorCode":101,"message":"Compare failed","cause":"[x != v] [7 != 1]","index":1}
> put /c w prevValue=v prevIndex=7
412 {"errorCode":101,"message":"Compare failed","cause":"[7 != 1]","index":1}
> put /c w prevValue=x prevIndex=1
412 {"errorCode":101,"message":"Compare failed","cause":"[x != v]","index":1}
> put /c w prevValue=v prevIndex=1 prevExist=true
200 {"action":"compareAndSwap","node":{"key":"/c","value":"w","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/c","value":"v","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn compare_and_swap_missing_key() {
    run(r#"
> put /m x prevValue=y
404 {"errorCode":100,"message":"Key not found","cause":"/m","index":0}
> put /m x prevIndex=5
404 {"errorCode":100,"message":"Key not found","cause":"/m","index":0}
> delete /m prevValue=y
404 {"errorCode":100,"message":"Key not found","cause":"/m","index":0}
> delete /m prevIndex=5
404 {"errorCode":100,"message":"Key not found","cause":"/m","index":0}
"#);
}

#[test]
fn compare_and_delete_on_value_and_index() {
    run(r#"
> put /c v
201 {"action":"set","node":{"key":"/c","value":"v","modifiedIndex":1,"createdIndex":1}}
> delete /c prevValue=other
412 {"errorCode":101,"message":"Compare failed","cause":"[other != v]","index":1}
> delete /c prevIndex=1001
412 {"errorCode":101,"message":"Compare failed","cause":"[1001 != 1]","index":1}
> delete /c prevValue=v prevIndex=1
200 {"action":"compareAndDelete","node":{"key":"/c","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/c","value":"v","modifiedIndex":1,"createdIndex":1}}
> get /c
404 {"errorCode":100,"message":"Key not found","cause":"/c","index":2}
"#);
}

// ---------------------------------------------------------------------------------------
// TTL
// ---------------------------------------------------------------------------------------

#[test]
fn ttl_sets_expiration_and_counts_down() {
    run(r#"
> put /t v ttl=10
201 {"action":"set","node":{"key":"/t","value":"v","expiration":"2026-01-01T00:00:10Z","ttl":10,"modifiedIndex":1,"createdIndex":1}}
> clock +2.2
> get /t
200 {"action":"get","node":{"key":"/t","value":"v","expiration":"2026-01-01T00:00:10Z","ttl":8,"modifiedIndex":1,"createdIndex":1}}
> clock +7.8
> get /t
200 {"action":"get","node":{"key":"/t","value":"v","expiration":"2026-01-01T00:00:10Z","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn expiry_happens_only_on_sync_and_consumes_an_index() {
    run(r#"
> put /t bye ttl=1
201 {"action":"set","node":{"key":"/t","value":"bye","expiration":"2026-01-01T00:00:01Z","ttl":1,"modifiedIndex":1,"createdIndex":1}}
> clock +0.5
> sync
(nothing expired)
> clock +0.5
> get /t
200 {"action":"get","node":{"key":"/t","value":"bye","expiration":"2026-01-01T00:00:01Z","modifiedIndex":1,"createdIndex":1}}
> sync
expired {"action":"expire","node":{"key":"/t","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/t","value":"bye","expiration":"2026-01-01T00:00:01Z","modifiedIndex":1,"createdIndex":1}}
> get /t
404 {"errorCode":100,"message":"Key not found","cause":"/t","index":2}
> stats
{"getsSuccess":1,"getsFail":1,"setsSuccess":1,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":1,"watchers":0}
"#);
}

#[test]
fn ttl_zero_has_expiration_now_and_no_ttl() {
    run(r#"
> put /z v ttl=0
201 {"action":"set","node":{"key":"/z","value":"v","expiration":"2026-01-01T00:00:00Z","modifiedIndex":1,"createdIndex":1}}
> sync
expired {"action":"expire","node":{"key":"/z","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/z","value":"v","expiration":"2026-01-01T00:00:00Z","modifiedIndex":1,"createdIndex":1}}
"#);
}

#[test]
fn expiries_in_one_sync_each_consume_an_index_in_expiration_order() {
    run(r#"
> put /b v ttl=2
201 {"action":"set","node":{"key":"/b","value":"v","expiration":"2026-01-01T00:00:02Z","ttl":2,"modifiedIndex":1,"createdIndex":1}}
> put /a v ttl=2
201 {"action":"set","node":{"key":"/a","value":"v","expiration":"2026-01-01T00:00:02Z","ttl":2,"modifiedIndex":2,"createdIndex":2}}
> put /c v ttl=1
201 {"action":"set","node":{"key":"/c","value":"v","expiration":"2026-01-01T00:00:01Z","ttl":1,"modifiedIndex":3,"createdIndex":3}}
> put /p v ttl=3
201 {"action":"set","node":{"key":"/p","value":"v","expiration":"2026-01-01T00:00:03Z","ttl":3,"modifiedIndex":4,"createdIndex":4}}
> clock +2.5
> sync
expired {"action":"expire","node":{"key":"/c","modifiedIndex":5,"createdIndex":3},"prevNode":{"key":"/c","value":"v","expiration":"2026-01-01T00:00:01Z","modifiedIndex":3,"createdIndex":3}}
expired {"action":"expire","node":{"key":"/a","modifiedIndex":6,"createdIndex":2},"prevNode":{"key":"/a","value":"v","expiration":"2026-01-01T00:00:02Z","modifiedIndex":2,"createdIndex":2}}
expired {"action":"expire","node":{"key":"/b","modifiedIndex":7,"createdIndex":1},"prevNode":{"key":"/b","value":"v","expiration":"2026-01-01T00:00:02Z","modifiedIndex":1,"createdIndex":1}}
> get /p
200 {"action":"get","node":{"key":"/p","value":"v","expiration":"2026-01-01T00:00:03Z","ttl":1,"modifiedIndex":4,"createdIndex":4}}
"#);
}

#[test]
fn directory_expires_with_its_subtree_as_one_event() {
    run(r#"
> put /td dir ttl=2
201 {"action":"set","node":{"key":"/td","dir":true,"expiration":"2026-01-01T00:00:02Z","ttl":2,"modifiedIndex":1,"createdIndex":1}}
> put /td/c 1
201 {"action":"set","node":{"key":"/td/c","value":"1","modifiedIndex":2,"createdIndex":2}}
> put /td/e 1 ttl=5
201 {"action":"set","node":{"key":"/td/e","value":"1","expiration":"2026-01-01T00:00:05Z","ttl":5,"modifiedIndex":3,"createdIndex":3}}
> watch child /td/c
watching (X-Etcd-Index: 3)
> get /td
200 {"action":"get","node":{"key":"/td","dir":true,"expiration":"2026-01-01T00:00:02Z","ttl":2,"nodes":[{"key":"/td/c","value":"1","modifiedIndex":2,"createdIndex":2},{"key":"/td/e","value":"1","expiration":"2026-01-01T00:00:05Z","ttl":5,"modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}
> clock +2
> sync
expired {"action":"expire","node":{"key":"/td","dir":true,"modifiedIndex":4,"createdIndex":1},"prevNode":{"key":"/td","dir":true,"expiration":"2026-01-01T00:00:02Z","modifiedIndex":1,"createdIndex":1}}
> events child
{"action":"expire","node":{"key":"/td","dir":true,"modifiedIndex":4,"createdIndex":1},"prevNode":{"key":"/td","dir":true,"expiration":"2026-01-01T00:00:02Z","modifiedIndex":1,"createdIndex":1}}
(closed)
> clock +10
> sync
(nothing expired)
"#);
}

#[test]
fn refresh_with_prev_exist_is_an_update_keeping_value_and_created_index() {
    run(r#"
> put /t keep ttl=5
201 {"action":"set","node":{"key":"/t","value":"keep","expiration":"2026-01-01T00:00:05Z","ttl":5,"modifiedIndex":1,"createdIndex":1}}
> clock +1.1
> put /t refresh ttl=50 prevExist=true
200 {"action":"update","node":{"key":"/t","value":"keep","expiration":"2026-01-01T00:00:51.1Z","ttl":50,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/t","value":"keep","expiration":"2026-01-01T00:00:05Z","ttl":4,"modifiedIndex":1,"createdIndex":1}}
> put /t refresh ttl=40
200 {"action":"set","node":{"key":"/t","value":"keep","expiration":"2026-01-01T00:00:41.1Z","ttl":40,"modifiedIndex":3,"createdIndex":3},"prevNode":{"key":"/t","value":"keep","expiration":"2026-01-01T00:00:51.1Z","ttl":50,"modifiedIndex":2,"createdIndex":1}}
> put /t refresh ttl=30 prevValue=keep
200 {"action":"compareAndSwap","node":{"key":"/t","value":"keep","expiration":"2026-01-01T00:00:31.1Z","ttl":30,"modifiedIndex":4,"createdIndex":3},"prevNode":{"key":"/t","value":"keep","expiration":"2026-01-01T00:00:41.1Z","ttl":40,"modifiedIndex":3,"createdIndex":3}}
"#);
}

#[test]
fn refresh_of_a_missing_key_is_key_not_found() {
    run(r#"
> put /missing refresh ttl=10
404 {"errorCode":100,"message":"Key not found","cause":"/missing","index":0}
> put /missing refresh ttl=10 prevExist=true
404 {"errorCode":100,"message":"Key not found","cause":"/missing","index":0}
"#);
}

#[test]
fn refresh_wakes_no_watcher_and_is_skipped_by_history_scans() {
    run(r#"
> put /r v ttl=100
201 {"action":"set","node":{"key":"/r","value":"v","expiration":"2026-01-01T00:01:40Z","ttl":100,"modifiedIndex":1,"createdIndex":1}}
> watch w /r
watching (X-Etcd-Index: 1)
> put /r refresh ttl=50
200 {"action":"set","node":{"key":"/r","value":"v","expiration":"2026-01-01T00:00:50Z","ttl":50,"modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/r","value":"v","expiration":"2026-01-01T00:01:40Z","ttl":100,"modifiedIndex":1,"createdIndex":1}}
> events w
(pending)
> put /r w prevExist=true
200 {"action":"update","node":{"key":"/r","value":"w","modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/r","value":"v","expiration":"2026-01-01T00:00:50Z","ttl":50,"modifiedIndex":2,"createdIndex":2}}
> events w
{"action":"update","node":{"key":"/r","value":"w","modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/r","value":"v","expiration":"2026-01-01T00:00:50Z","ttl":50,"modifiedIndex":2,"createdIndex":2}}
(closed)
> watch h /r waitIndex=2
watching (X-Etcd-Index: 3)
> events h
{"action":"update","node":{"key":"/r","value":"w","modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/r","value":"v","expiration":"2026-01-01T00:00:50Z","ttl":50,"modifiedIndex":2,"createdIndex":2}}
(closed)
"#);
}

#[test]
fn a_write_without_ttl_removes_the_ttl() {
    run(r#"
> put /t v ttl=30
201 {"action":"set","node":{"key":"/t","value":"v","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":1,"createdIndex":1}}
> put /t v2 ttl= prevExist=true
200 {"action":"update","node":{"key":"/t","value":"v2","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/t","value":"v","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":1,"createdIndex":1}}
> put /u v ttl=30
201 {"action":"set","node":{"key":"/u","value":"v","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":3,"createdIndex":3}}
> put /u w
200 {"action":"set","node":{"key":"/u","value":"w","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"/u","value":"v","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":3,"createdIndex":3}}
> put /c v ttl=30
201 {"action":"set","node":{"key":"/c","value":"v","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":5,"createdIndex":5}}
> put /c w prevValue=v
200 {"action":"compareAndSwap","node":{"key":"/c","value":"w","modifiedIndex":6,"createdIndex":5},"prevNode":{"key":"/c","value":"v","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":5,"createdIndex":5}}
> clock +60
> sync
(nothing expired)
"#);
}

#[test]
fn ttl_can_be_set_through_update_and_compare_and_swap() {
    run(r#"
> put /t v
201 {"action":"set","node":{"key":"/t","value":"v","modifiedIndex":1,"createdIndex":1}}
> put /t v2 ttl=30 prevValue=v
200 {"action":"compareAndSwap","node":{"key":"/t","value":"v2","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/t","value":"v","modifiedIndex":1,"createdIndex":1}}
> put /t v3 ttl=40 prevExist=true
200 {"action":"update","node":{"key":"/t","value":"v3","expiration":"2026-01-01T00:00:40Z","ttl":40,"modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/t","value":"v2","expiration":"2026-01-01T00:00:30Z","ttl":30,"modifiedIndex":2,"createdIndex":1}}
"#);
}

#[test]
fn directory_ttl_update_reports_a_new_index_but_keeps_the_stored_one() {
    run(r#"
> put /d dir
201 {"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> put /d dir prevExist=true ttl=100
200 {"action":"update","node":{"key":"/d","dir":true,"expiration":"2026-01-01T00:01:40Z","ttl":100,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> get /d
200 {"action":"get","node":{"key":"/d","dir":true,"expiration":"2026-01-01T00:01:40Z","ttl":100,"modifiedIndex":1,"createdIndex":1}}
> put /d dir prevExist=true ttl=
200 {"action":"update","node":{"key":"/d","dir":true,"modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"expiration":"2026-01-01T00:01:40Z","ttl":100,"modifiedIndex":1,"createdIndex":1}}
> get /d
200 {"action":"get","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> put /d refresh ttl=100
403 {"errorCode":102,"message":"Not a file","cause":"/d","index":3}
"#);
}

#[test]
fn ttl_saturates_instead_of_overflowing() {
    run(r#"
> put /t v ttl=18446744073709551615
201 {"action":"set","node":{"key":"/t","value":"v","expiration":"2554-07-21T23:34:33.709551615Z","ttl":16679518474,"modifiedIndex":1,"createdIndex":1}}
"#);
}

// ---------------------------------------------------------------------------------------
// §5 watches
// ---------------------------------------------------------------------------------------

#[test]
fn watch_fires_once_on_the_next_change() {
    run(r#"
> put /x 1
201 {"action":"set","node":{"key":"/x","value":"1","modifiedIndex":1,"createdIndex":1}}
> watch w /w
watching (X-Etcd-Index: 1)
> events w
(pending)
> stats
{"getsSuccess":0,"getsFail":0,"setsSuccess":1,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":1}
> put /w hello
201 {"action":"set","node":{"key":"/w","value":"hello","modifiedIndex":2,"createdIndex":2}}
> events w
{"action":"set","node":{"key":"/w","value":"hello","modifiedIndex":2,"createdIndex":2}}
(closed)
> put /w again
200 {"action":"set","node":{"key":"/w","value":"again","modifiedIndex":3,"createdIndex":3},"prevNode":{"key":"/w","value":"hello","modifiedIndex":2,"createdIndex":2}}
> stats
{"getsSuccess":0,"getsFail":0,"setsSuccess":3,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":0}
"#);
}

#[test]
fn watch_reports_compare_and_swap_and_delete_with_prev_node() {
    run(r#"
> put /w a
201 {"action":"set","node":{"key":"/w","value":"a","modifiedIndex":1,"createdIndex":1}}
> watch w1 /w
watching (X-Etcd-Index: 1)
> put /w b prevValue=a
200 {"action":"compareAndSwap","node":{"key":"/w","value":"b","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/w","value":"a","modifiedIndex":1,"createdIndex":1}}
> events w1
{"action":"compareAndSwap","node":{"key":"/w","value":"b","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/w","value":"a","modifiedIndex":1,"createdIndex":1}}
(closed)
> watch w2 /w
watching (X-Etcd-Index: 2)
> delete /w
200 {"action":"delete","node":{"key":"/w","modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/w","value":"b","modifiedIndex":2,"createdIndex":1}}
> events w2
{"action":"delete","node":{"key":"/w","modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/w","value":"b","modifiedIndex":2,"createdIndex":1}}
(closed)
"#);
}

#[test]
fn watch_from_history_answers_the_first_match_at_or_after_wait_index() {
    run(r#"
> put /w v1
201 {"action":"set","node":{"key":"/w","value":"v1","modifiedIndex":1,"createdIndex":1}}
> put /w v2
200 {"action":"set","node":{"key":"/w","value":"v2","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/w","value":"v1","modifiedIndex":1,"createdIndex":1}}
> put /other noise
201 {"action":"set","node":{"key":"/other","value":"noise","modifiedIndex":3,"createdIndex":3}}
> watch a /w waitIndex=1
watching (X-Etcd-Index: 3)
> events a
{"action":"set","node":{"key":"/w","value":"v1","modifiedIndex":1,"createdIndex":1}}
(closed)
> watch b /w waitIndex=2
watching (X-Etcd-Index: 3)
> events b
{"action":"set","node":{"key":"/w","value":"v2","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/w","value":"v1","modifiedIndex":1,"createdIndex":1}}
(closed)
> watch c /w waitIndex=3
watching (X-Etcd-Index: 3)
> events c
(pending)
> stats
{"getsSuccess":0,"getsFail":0,"setsSuccess":3,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":1}
> put /w v3
200 {"action":"set","node":{"key":"/w","value":"v3","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"/w","value":"v2","modifiedIndex":2,"createdIndex":2}}
> events c
{"action":"set","node":{"key":"/w","value":"v3","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"/w","value":"v2","modifiedIndex":2,"createdIndex":2}}
(closed)
"#);
}

#[test]
fn watch_on_a_future_index_waits_for_it() {
    run(r#"
> put /w v1
201 {"action":"set","node":{"key":"/w","value":"v1","modifiedIndex":1,"createdIndex":1}}
> watch f /w waitIndex=3
watching (X-Etcd-Index: 1)
> put /w v2
200 {"action":"set","node":{"key":"/w","value":"v2","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/w","value":"v1","modifiedIndex":1,"createdIndex":1}}
> events f
(pending)
> put /w v3
200 {"action":"set","node":{"key":"/w","value":"v3","modifiedIndex":3,"createdIndex":3},"prevNode":{"key":"/w","value":"v2","modifiedIndex":2,"createdIndex":2}}
> events f
{"action":"set","node":{"key":"/w","value":"v3","modifiedIndex":3,"createdIndex":3},"prevNode":{"key":"/w","value":"v2","modifiedIndex":2,"createdIndex":2}}
(closed)
"#);
}

#[test]
fn recursive_watch_sees_descendants_but_not_hidden_ones() {
    run(r#"
> put /d dir
201 {"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> watch r /d recursive
watching (X-Etcd-Index: 1)
> put /d/_hidden h
201 {"action":"set","node":{"key":"/d/_hidden","value":"h","modifiedIndex":2,"createdIndex":2}}
> events r
(pending)
> put /d/sub/child c
201 {"action":"set","node":{"key":"/d/sub/child","value":"c","modifiedIndex":3,"createdIndex":3}}
> events r
{"action":"set","node":{"key":"/d/sub/child","value":"c","modifiedIndex":3,"createdIndex":3}}
(closed)
> watch h /d/_hidden
watching (X-Etcd-Index: 3)
> put /d/_hidden h2
200 {"action":"set","node":{"key":"/d/_hidden","value":"h2","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"/d/_hidden","value":"h","modifiedIndex":2,"createdIndex":2}}
> events h
{"action":"set","node":{"key":"/d/_hidden","value":"h2","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"/d/_hidden","value":"h","modifiedIndex":2,"createdIndex":2}}
(closed)
# Quirk (etcd 3.4): a recursive history scan does match hidden keys.
> watch q /d recursive waitIndex=2
watching (X-Etcd-Index: 4)
> events q
{"action":"set","node":{"key":"/d/_hidden","value":"h","modifiedIndex":2,"createdIndex":2}}
(closed)
"#);
}

#[test]
fn non_recursive_watch_on_a_directory_ignores_children_but_sees_its_delete() {
    run(r#"
> put /d dir
201 {"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> watch w /d
watching (X-Etcd-Index: 1)
> put /d/child c
201 {"action":"set","node":{"key":"/d/child","value":"c","modifiedIndex":2,"createdIndex":2}}
> events w
(pending)
> delete /d recursive
200 {"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> events w
{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
(closed)
"#);
}

#[test]
fn deleting_a_directory_reaches_watchers_of_keys_inside_it() {
    run(r#"
> put /d/a/x 1
201 {"action":"set","node":{"key":"/d/a/x","value":"1","modifiedIndex":1,"createdIndex":1}}
> watch inside /d/a/x
watching (X-Etcd-Index: 1)
> watch second_inside /d/a/x
watching (X-Etcd-Index: 1)
> watch absent /d/a/nothing
watching (X-Etcd-Index: 1)
> watch sibling /dx
watching (X-Etcd-Index: 1)
> delete /d recursive
200 {"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
> events inside
{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
(closed)
> events second_inside
{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
(closed)
> events absent
(pending)
> events sibling
(pending)
# A history scan also matches a watch below a deleted directory.
> watch late /d/a/x waitIndex=2
watching (X-Etcd-Index: 2)
> events late
{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}
(closed)
"#);
}

#[test]
fn watching_a_key_that_does_not_exist_yet() {
    run(r#"
> watch w /not/yet/there
watching (X-Etcd-Index: 0)
> put /not/yet/there now
201 {"action":"set","node":{"key":"/not/yet/there","value":"now","modifiedIndex":1,"createdIndex":1}}
> events w
{"action":"set","node":{"key":"/not/yet/there","value":"now","modifiedIndex":1,"createdIndex":1}}
(closed)
"#);
}

#[test]
fn recursive_watch_sees_in_order_creates() {
    run(r#"
> put /q dir prevExist=false
201 {"action":"create","node":{"key":"/q","dir":true,"modifiedIndex":1,"createdIndex":1}}
> watch w /q recursive
watching (X-Etcd-Index: 1)
> post /q job
201 {"action":"create","node":{"key":"/q/00000000000000000002","value":"job","modifiedIndex":2,"createdIndex":2}}
> events w
{"action":"create","node":{"key":"/q/00000000000000000002","value":"job","modifiedIndex":2,"createdIndex":2}}
(closed)
"#);
}

#[test]
fn stream_watcher_receives_every_event_once() {
    run(r#"
> watch s /k stream
watching (X-Etcd-Index: 0)
> watch r / recursive stream
watching (X-Etcd-Index: 0)
> put /k a
201 {"action":"set","node":{"key":"/k","value":"a","modifiedIndex":1,"createdIndex":1}}
> delete /k
200 {"action":"delete","node":{"key":"/k","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/k","value":"a","modifiedIndex":1,"createdIndex":1}}
> put /k b
201 {"action":"set","node":{"key":"/k","value":"b","modifiedIndex":3,"createdIndex":3}}
> events s
{"action":"set","node":{"key":"/k","value":"a","modifiedIndex":1,"createdIndex":1}}
{"action":"delete","node":{"key":"/k","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/k","value":"a","modifiedIndex":1,"createdIndex":1}}
{"action":"set","node":{"key":"/k","value":"b","modifiedIndex":3,"createdIndex":3}}
(pending)
> events r
{"action":"set","node":{"key":"/k","value":"a","modifiedIndex":1,"createdIndex":1}}
{"action":"delete","node":{"key":"/k","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/k","value":"a","modifiedIndex":1,"createdIndex":1}}
{"action":"set","node":{"key":"/k","value":"b","modifiedIndex":3,"createdIndex":3}}
(pending)
> drop s
> stats
{"getsSuccess":0,"getsFail":0,"setsSuccess":2,"setsFail":0,"deleteSuccess":1,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":1}
"#);
}

#[test]
fn stream_watch_from_wait_index_replays_history_then_goes_live() {
    run(r#"
> put /k 1
201 {"action":"set","node":{"key":"/k","value":"1","modifiedIndex":1,"createdIndex":1}}
> put /x 1
201 {"action":"set","node":{"key":"/x","value":"1","modifiedIndex":2,"createdIndex":2}}
> put /k 2
200 {"action":"set","node":{"key":"/k","value":"2","modifiedIndex":3,"createdIndex":3},"prevNode":{"key":"/k","value":"1","modifiedIndex":1,"createdIndex":1}}
> watch s /k stream waitIndex=1
watching (X-Etcd-Index: 3)
> put /k 3
200 {"action":"set","node":{"key":"/k","value":"3","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"/k","value":"2","modifiedIndex":3,"createdIndex":3}}
> events s
{"action":"set","node":{"key":"/k","value":"1","modifiedIndex":1,"createdIndex":1}}
{"action":"set","node":{"key":"/k","value":"2","modifiedIndex":3,"createdIndex":3},"prevNode":{"key":"/k","value":"1","modifiedIndex":1,"createdIndex":1}}
{"action":"set","node":{"key":"/k","value":"3","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"/k","value":"2","modifiedIndex":3,"createdIndex":3}}
(pending)
"#);
}

#[test]
fn dropping_a_watcher_unregisters_it() {
    run(r#"
> watch a /k
watching (X-Etcd-Index: 0)
> watch b /k recursive
watching (X-Etcd-Index: 0)
> drop a
> drop b
> stats
{"getsSuccess":0,"getsFail":0,"setsSuccess":0,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":0}
"#);
}

#[test]
fn stats_count_every_kind_of_operation() {
    run(r#"
> put /s 1
201 {"action":"set","node":{"key":"/s","value":"1","modifiedIndex":1,"createdIndex":1}}
> get /s
200 {"action":"get","node":{"key":"/s","value":"1","modifiedIndex":1,"createdIndex":1}}
> get /missing
404 {"errorCode":100,"message":"Key not found","cause":"/missing","index":1}
> delete /s
200 {"action":"delete","node":{"key":"/s","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/s","value":"1","modifiedIndex":1,"createdIndex":1}}
> delete /s
404 {"errorCode":100,"message":"Key not found","cause":"/s","index":2}
> put /c 1 prevExist=false
201 {"action":"create","node":{"key":"/c","value":"1","modifiedIndex":3,"createdIndex":3}}
> put /c 1 prevExist=false
412 {"errorCode":105,"message":"Key already exists","cause":"/c","index":3}
> put /c 2 prevValue=1
200 {"action":"compareAndSwap","node":{"key":"/c","value":"2","modifiedIndex":4,"createdIndex":3},"prevNode":{"key":"/c","value":"1","modifiedIndex":3,"createdIndex":3}}
> put /c 2 prevValue=nope
412 {"errorCode":101,"message":"Compare failed","cause":"[nope != 2]","index":4}
> put /c 3 prevExist=true
200 {"action":"update","node":{"key":"/c","value":"3","modifiedIndex":5,"createdIndex":3},"prevNode":{"key":"/c","value":"2","modifiedIndex":4,"createdIndex":3}}
> put /nope 3 prevExist=true
404 {"errorCode":100,"message":"Key not found","cause":"/nope","index":5}
> delete /c prevValue=x
412 {"errorCode":101,"message":"Compare failed","cause":"[x != 3]","index":5}
> delete /c prevValue=3
200 {"action":"compareAndDelete","node":{"key":"/c","modifiedIndex":6,"createdIndex":3},"prevNode":{"key":"/c","value":"3","modifiedIndex":5,"createdIndex":3}}
> put / x
400 {"errorCode":107,"message":"Root is read only","cause":"/","index":6}
> stats
{"getsSuccess":1,"getsFail":1,"setsSuccess":1,"setsFail":1,"deleteSuccess":1,"deleteFail":1,"updateSuccess":1,"updateFail":1,"createSuccess":1,"createFail":1,"compareAndSwapSuccess":1,"compareAndSwapFail":1,"compareAndDeleteSuccess":1,"compareAndDeleteFail":1,"expireCount":0,"watchers":0}
"#);
}

#[test]
fn snapshot_restore_keeps_tree_ttls_and_history() {
    run(r#"
> put /a/b 1 ttl=5
201 {"action":"set","node":{"key":"/a/b","value":"1","expiration":"2026-01-01T00:00:05Z","ttl":5,"modifiedIndex":1,"createdIndex":1}}
> put /a/_h x
201 {"action":"set","node":{"key":"/a/_h","value":"x","modifiedIndex":2,"createdIndex":2}}
> put /d dir ttl=3
201 {"action":"set","node":{"key":"/d","dir":true,"expiration":"2026-01-01T00:00:03Z","ttl":3,"modifiedIndex":3,"createdIndex":3}}
> put /a/b refresh ttl=9 prevExist=true
200 {"action":"update","node":{"key":"/a/b","value":"1","expiration":"2026-01-01T00:00:09Z","ttl":9,"modifiedIndex":4,"createdIndex":1},"prevNode":{"key":"/a/b","value":"1","expiration":"2026-01-01T00:00:05Z","ttl":5,"modifiedIndex":1,"createdIndex":1}}
> snapshot-restore
> watch h /a/b waitIndex=1
watching (X-Etcd-Index: 4)
> events h
{"action":"set","node":{"key":"/a/b","value":"1","expiration":"2026-01-01T00:00:05Z","ttl":5,"modifiedIndex":1,"createdIndex":1}}
(closed)
> get / recursive
200 {"action":"get","node":{"dir":true,"nodes":[{"key":"/a","dir":true,"nodes":[{"key":"/a/b","value":"1","expiration":"2026-01-01T00:00:09Z","ttl":9,"modifiedIndex":4,"createdIndex":1}],"modifiedIndex":1,"createdIndex":1},{"key":"/d","dir":true,"expiration":"2026-01-01T00:00:03Z","ttl":3,"modifiedIndex":3,"createdIndex":3}]}}
> clock +3
> sync
expired {"action":"expire","node":{"key":"/d","dir":true,"modifiedIndex":5,"createdIndex":3},"prevNode":{"key":"/d","dir":true,"expiration":"2026-01-01T00:00:03Z","modifiedIndex":3,"createdIndex":3}}
"#);
}
