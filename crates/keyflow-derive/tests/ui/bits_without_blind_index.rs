use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "userData")]
struct User {
    #[encrypted(deterministic, bits = 16)]
    email: String,
}

fn main() {}
