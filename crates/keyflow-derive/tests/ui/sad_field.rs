use keyflow_derive::Encrypt;

#[derive(Encrypt)]
#[keyflow(purpose = "financialData")]
struct Payment {
    #[encrypted]
    card_number: String,
    #[encrypted]
    cvv: String,
}

fn main() {}
