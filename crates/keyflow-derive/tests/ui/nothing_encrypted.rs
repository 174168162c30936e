use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "userData", auto_detect)]
struct Settings {
    theme: String,
    #[keyflow(plain)]
    email: String,
}

fn main() {}
