//! Masking for display (PRODUCT.md §4). Computed at read time, never stored.
//!
//! A value too short to mask keeps none of its characters: it is fully masked, never
//! returned in clear. Lengths count characters, not bytes.

use std::str::FromStr;

use crate::Error;

/// What kind of value is being masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(rename_all = "camelCase", description = "The masks.")
)]
pub enum MaskType {
    /// Card number: `*` × (len − 4) + last 4 (spaces and dashes removed first).
    Card,
    /// Bank account number: as `Card`.
    BankAccount,
    /// US SSN: `***-**-` + last 4 digits.
    Ssn,
    /// Phone: `(***) ***-` + last 4 digits.
    Phone,
    /// Email: first character + up to 3 `*` + `@domain`.
    Email,
    /// IBAN: country code + `*` for the middle + last 4 (spaces removed first).
    Iban,
    /// Anything else: first and last character kept.
    Default,
}

impl MaskType {
    /// The name used on the CLI and in the API.
    pub fn name(self) -> &'static str {
        match self {
            MaskType::Card => "card",
            MaskType::BankAccount => "bankAccount",
            MaskType::Ssn => "ssn",
            MaskType::Phone => "phone",
            MaskType::Email => "email",
            MaskType::Iban => "iban",
            MaskType::Default => "default",
        }
    }
}

impl FromStr for MaskType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "card" => MaskType::Card,
            "bankAccount" => MaskType::BankAccount,
            "ssn" => MaskType::Ssn,
            "phone" => MaskType::Phone,
            "email" => MaskType::Email,
            "iban" => MaskType::Iban,
            "default" => MaskType::Default,
            _ => {
                return Err(Error::Invalid(
                    "mask type (card, bankAccount, ssn, phone, email, iban or default)",
                ))
            }
        })
    }
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

fn last_n(chars: &[char], n: usize) -> String {
    chars
        .get(chars.len().saturating_sub(n)..)
        .unwrap_or_default()
        .iter()
        .collect()
}

fn digits(value: &str) -> Vec<char> {
    value.chars().filter(char::is_ascii_digit).collect()
}

/// Masks `value` as `kind`.
pub fn mask(value: &str, kind: MaskType) -> String {
    match kind {
        MaskType::Card | MaskType::BankAccount => {
            let c: Vec<char> = value.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
            if c.len() <= 4 {
                return stars(c.len().max(1));
            }
            stars(c.len() - 4) + &last_n(&c, 4)
        }
        MaskType::Ssn => {
            let d = digits(value);
            if d.len() < 5 {
                return "***-**-****".into();
            }
            format!("***-**-{}", last_n(&d, 4))
        }
        MaskType::Phone => {
            let d = digits(value);
            if d.len() < 5 {
                return "(***) ***-****".into();
            }
            format!("(***) ***-{}", last_n(&d, 4))
        }
        MaskType::Email => match value.rsplit_once('@') {
            Some((local, domain)) if !domain.is_empty() => {
                let l: Vec<char> = local.chars().collect();
                if l.len() < 2 {
                    return format!("{}@{domain}", stars(l.len().max(1)));
                }
                format!("{}{}@{domain}", l[0], stars((l.len() - 1).min(3)))
            }
            _ => mask(value, MaskType::Default),
        },
        MaskType::Iban => {
            let c: Vec<char> = value.chars().filter(|c| !c.is_whitespace()).collect();
            if c.len() < 8 {
                return stars(c.len().max(1));
            }
            let cc: String = c[..2].iter().collect();
            cc + &stars(c.len() - 6) + &last_n(&c, 4)
        }
        MaskType::Default => {
            let c: Vec<char> = value.chars().collect();
            if c.len() <= 2 {
                return stars(c.len().max(1));
            }
            format!("{}{}{}", c[0], stars(c.len() - 2), c[c.len() - 1])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_outputs() {
        let cases = [
            ("4532123456789012", MaskType::Card, "************9012"),
            ("4532 1234 5678 9012", MaskType::Card, "************9012"),
            ("12345678", MaskType::BankAccount, "****5678"),
            ("123456789", MaskType::Ssn, "***-**-6789"),
            ("123-45-6789", MaskType::Ssn, "***-**-6789"),
            ("555-123-4567", MaskType::Phone, "(***) ***-4567"),
            ("+1 (555) 123-4567", MaskType::Phone, "(***) ***-4567"),
            ("user@example.com", MaskType::Email, "u***@example.com"),
            ("jo@example.com", MaskType::Email, "j*@example.com"),
            ("alexander@example.com", MaskType::Email, "a***@example.com"),
            (
                "DE89370400440532013000",
                MaskType::Iban,
                "DE****************3000",
            ),
            (
                "DE89 3704 0044 0532 0130 00",
                MaskType::Iban,
                "DE****************3000",
            ),
            ("secret", MaskType::Default, "s****t"),
            ("Zoë", MaskType::Default, "Z*ë"),
        ];
        for (input, kind, want) in cases {
            assert_eq!(mask(input, kind), want, "{input} as {kind:?}");
        }
    }

    #[test]
    fn short_values_are_fully_masked() {
        assert_eq!(mask("1234", MaskType::Card), "****");
        assert_eq!(mask("", MaskType::Card), "*");
        assert_eq!(mask("1234", MaskType::Ssn), "***-**-****");
        assert_eq!(mask("123", MaskType::Phone), "(***) ***-****");
        assert_eq!(mask("a@example.com", MaskType::Email), "*@example.com");
        assert_eq!(mask("DE89", MaskType::Iban), "****");
        assert_eq!(mask("ab", MaskType::Default), "**");
        assert_eq!(mask("a", MaskType::Default), "*");
        assert_eq!(mask("not-an-email", MaskType::Email), "n**********l");
    }

    #[test]
    fn names_round_trip() {
        for k in [
            MaskType::Card,
            MaskType::BankAccount,
            MaskType::Ssn,
            MaskType::Phone,
            MaskType::Email,
            MaskType::Iban,
            MaskType::Default,
        ] {
            assert_eq!(k.name().parse::<MaskType>(), Ok(k));
        }
        assert!("creditcard".parse::<MaskType>().is_err());
    }
}
