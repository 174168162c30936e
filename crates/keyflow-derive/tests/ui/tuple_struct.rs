use keyflow_derive::Encrypt;

#[derive(Encrypt)]
struct Ssn(#[encrypted] String);

fn main() {}
