//! Compile-time behaviour of `#[service]`: every rejected signature gets a clear error at the
//! offending token, and a full service compiles. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p rpc-tests --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui/pass/*.rs");
}
