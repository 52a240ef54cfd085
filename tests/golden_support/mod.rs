//! Golden-file comparison shared by the end-to-end tests' support modules (included with
//! `#[path]`): `tests/golden/<dir>/<name>` must equal the output, or `UPDATE_GOLDEN=1`
//! rewrites it.

use std::path::Path;

/// Compares `actual` with `tests/golden/<dir>/<name>`; with `UPDATE_GOLDEN=1` rewrites it
/// instead. On a difference the panic names the first differing line, and prints the
/// whole output too when `show_actual`.
pub fn check_golden_in(dir: &str, name: &str, actual: &str, show_actual: bool) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir)
        .join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir golden");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        let whole = if show_actual {
            format!("\n--- actual ---\n{actual}")
        } else {
            String::new()
        };
        panic!(
            "golden {} differs at line {}:\n expected: {:?}\n   actual: {:?}\n(UPDATE_GOLDEN=1 rewrites it){whole}",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}
