use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "userData")]
struct User {
    #[keyflow(plain)]
    #[encrypted]
    email: String,
}

fn main() {}
