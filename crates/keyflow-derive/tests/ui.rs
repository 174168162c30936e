//! Misuse of `#[derive(Encrypt)]` fails to compile, with a message that says why.
#![allow(missing_docs)]

#[test]
fn misuse_is_a_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
