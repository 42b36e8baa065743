//! `#[task]` refuses what it cannot complete, with its own message at the
//! offending code (`tests/ui/*.stderr`; `TRYBUILD=overwrite` rewrites them).

#[test]
fn refusals() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
