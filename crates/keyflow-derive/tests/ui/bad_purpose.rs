use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "user data!")]
struct User {
    #[encrypted]
    ssn: String,
}

fn main() {}
