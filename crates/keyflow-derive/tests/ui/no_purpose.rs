use keyflow_derive::Encrypt;

#[derive(Encrypt)]
struct User {
    #[encrypted]
    ssn: String,
}

fn main() {}
