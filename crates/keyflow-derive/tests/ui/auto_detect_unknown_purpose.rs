use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "customerRecords", auto_detect)]
struct User {
    ssn: String,
}

fn main() {}
