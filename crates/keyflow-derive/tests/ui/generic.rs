use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "userData")]
struct Wrapper<T> {
    #[encrypted]
    value: T,
}

fn main() {}
