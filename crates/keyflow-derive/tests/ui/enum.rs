use keyflow_derive::Encrypt;

#[derive(Encrypt)]
enum Secret {
    A(String),
}

fn main() {}
