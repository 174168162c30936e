use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "userData")]
struct User {
    #[encrypted(randomised)]
    email: String,
}

fn main() {}
