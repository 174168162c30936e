use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "userData")]
struct User {
    #[encrypted(deterministic, blind_index)]
    email: String,
}

fn main() {}
