//! `#[derive(Encrypt)]` for `keyflow-fields` (use it as `keyflow_fields::Encrypt`; the
//! attributes are documented there).
//!
//! A thin code generator: it reads the struct and its attributes, decides at compile
//! time which fields are encrypted (explicit attributes, or auto-detection by field
//! name from the purpose lists), and emits a twin struct plus methods that call the
//! ordinary, unit-tested functions of `keyflow_fields::record`. Misuse is a compile
//! error with a span on the offending item.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, LitInt, LitStr, Meta, Token};

// The purpose lists and name normalization: the same crate keyflow-fields re-exports
// as `names`, so the macro and the runtime can never disagree. (A proc-macro crate
// cannot depend on keyflow-fields, which re-exports the macro.)
use keyflow_field_names as names;

/// Derives `encrypt` / `decrypt` / `reencrypt` and an `Encrypted…` twin struct.
/// See `keyflow_fields::Encrypt`.
#[proc_macro_derive(Encrypt, attributes(encrypted, keyflow))]
pub fn derive_encrypt(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(Default)]
struct ContainerOpts {
    purpose: Option<LitStr>,
    auto_detect: Option<Span>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Randomized,
    Deterministic,
    BlindIndex,
}

enum Bits {
    Fixed(u16),
    Distinct(u64),
}

struct FieldPlan<'a> {
    ident: &'a Ident,
    ty: &'a syn::Type,
    vis: &'a syn::Visibility,
    attrs: Vec<&'a Attribute>,
    /// `None`: kept in clear.
    enc: Option<Encryption>,
}

struct Encryption {
    mode: Mode,
    purpose: String,
    bits: Bits,
    label: String,
}

fn valid_purpose(p: &str) -> bool {
    let b = p.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn purpose_lit(lit: LitStr) -> syn::Result<LitStr> {
    if valid_purpose(&lit.value()) {
        Ok(lit)
    } else {
        Err(syn::Error::new(
            lit.span(),
            "invalid purpose name: a letter, then up to 63 letters, digits, '_', '-' or '.'",
        ))
    }
}

fn container_opts(attrs: &[Attribute]) -> syn::Result<ContainerOpts> {
    let mut opts = ContainerOpts::default();
    for attr in attrs {
        if attr.path().is_ident("encrypted") {
            return Err(syn::Error::new(
                attr.span(),
                "#[encrypted] goes on fields; on the struct use #[keyflow(purpose = \"…\", auto_detect)]",
            ));
        }
        if !attr.path().is_ident("keyflow") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("purpose") {
                opts.purpose = Some(purpose_lit(meta.value()?.parse()?)?);
                Ok(())
            } else if meta.path.is_ident("auto_detect") {
                opts.auto_detect = Some(meta.path.span());
                Ok(())
            } else {
                Err(meta.error("unknown #[keyflow] option on a struct: expected `purpose = \"…\"` or `auto_detect`"))
            }
        })?;
    }
    Ok(opts)
}

fn ident_name(ident: &Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

fn field_plan<'a>(field: &'a syn::Field, container: &ContainerOpts) -> syn::Result<FieldPlan<'a>> {
    let ident = field
        .ident
        .as_ref()
        .ok_or_else(|| syn::Error::new(field.span(), "#[derive(Encrypt)] needs named fields"))?;
    let name = ident_name(ident);
    if names::is_sensitive_authentication_data(&name) {
        return Err(syn::Error::new(
            ident.span(),
            format!("`{name}` is sensitive authentication data (card verification code, PIN or track data): it may never be stored, not even encrypted (PCI DSS 3.3.1); remove the field from stored records"),
        ));
    }
    let mut explicit: Option<(Mode, Option<LitStr>, Option<Bits>, Span)> = None;
    let mut plain = false;
    for attr in &field.attrs {
        if attr.path().is_ident("keyflow") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("plain") {
                    plain = true;
                    Ok(())
                } else {
                    Err(meta.error("unknown #[keyflow] option on a field: expected `plain` (use #[encrypted(…)] to encrypt)"))
                }
            })?;
        } else if attr.path().is_ident("encrypted") {
            if explicit.is_some() {
                return Err(syn::Error::new(attr.span(), "#[encrypted] given twice"));
            }
            let (mut mode, mut purpose, mut bits) = (Mode::Randomized, None, None);
            if let Meta::List(_) = &attr.meta {
                let mut modes = 0;
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("deterministic") {
                        mode = Mode::Deterministic;
                        modes += 1;
                    } else if meta.path.is_ident("blind_index") {
                        mode = Mode::BlindIndex;
                        modes += 1;
                    } else if meta.path.is_ident("randomized") {
                        modes += 1;
                    } else if meta.path.is_ident("purpose") {
                        purpose = Some(purpose_lit(meta.value()?.parse()?)?);
                    } else if meta.path.is_ident("bits") {
                        let lit: LitInt = meta.value()?.parse()?;
                        let n: u16 = lit.base10_parse()?;
                        if !(8..=256).contains(&n) {
                            return Err(syn::Error::new(lit.span(), "bits must be 8..=256"));
                        }
                        bits = Some(Bits::Fixed(n));
                    } else if meta.path.is_ident("distinct") {
                        let lit: LitInt = meta.value()?.parse()?;
                        bits = Some(Bits::Distinct(lit.base10_parse()?));
                    } else {
                        return Err(meta.error("unknown #[encrypted] option: expected `randomized`, `deterministic`, `blind_index`, `bits = N`, `distinct = N` or `purpose = \"…\"`"));
                    }
                    if modes > 1 {
                        return Err(meta.error("choose one of `randomized`, `deterministic` and `blind_index`"));
                    }
                    Ok(())
                })?;
            } else if let Meta::NameValue(nv) = &attr.meta {
                return Err(syn::Error::new(
                    nv.span(),
                    "write #[encrypted] or #[encrypted(…)]",
                ));
            }
            if bits.is_some() && mode != Mode::BlindIndex {
                return Err(syn::Error::new(
                    attr.span(),
                    "`bits` and `distinct` apply to `blind_index` only",
                ));
            }
            explicit = Some((mode, purpose, bits, attr.span()));
        }
    }
    if plain && explicit.is_some() {
        return Err(syn::Error::new(
            ident.span(),
            "a field cannot be both #[keyflow(plain)] and #[encrypted]",
        ));
    }
    let container_purpose = container.purpose.as_ref().map(LitStr::value);
    let enc = match explicit {
        Some((mode, purpose, bits, span)) => {
            let purpose = purpose.map(|p| p.value()).or(container_purpose).ok_or_else(|| {
                syn::Error::new(span, "no purpose for this encrypted field: add `purpose = \"…\"` here or #[keyflow(purpose = \"…\")] on the struct")
            })?;
            Some(Encryption {
                mode,
                purpose,
                bits: bits.unwrap_or(Bits::Fixed(32)),
                label: names::normalize(&name),
            })
        }
        None if !plain && container.auto_detect.is_some() => {
            let purpose = container_purpose.unwrap_or_default();
            names::is_sensitive_for(&purpose, &name).then(|| Encryption {
                mode: Mode::Randomized,
                purpose,
                bits: Bits::Fixed(32),
                label: names::normalize(&name),
            })
        }
        None => None,
    };
    Ok(FieldPlan {
        ident,
        ty: &field.ty,
        vis: &field.vis,
        attrs: field
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("serde") || a.path().is_ident("doc"))
            .collect(),
        enc,
    })
}

/// Serde attributes an encrypted field keeps on its twin: renames and aliases only
/// (`with`, `default`, … described the plaintext type, not the ciphertext).
fn keeps_on_ciphertext(attr: &Attribute) -> bool {
    if attr.path().is_ident("doc") {
        return true;
    }
    attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
        .map(|items| {
            items
                .iter()
                .all(|m| m.path().is_ident("rename") || m.path().is_ident("alias"))
        })
        .unwrap_or(false)
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(Encrypt)] does not support generic structs",
        ));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            name.span(),
            "#[derive(Encrypt)] supports structs with named fields only",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new(
            name.span(),
            "#[derive(Encrypt)] supports structs with named fields only",
        ));
    };
    let container = container_opts(&input.attrs)?;
    if let (Some(span), purpose) = (container.auto_detect, &container.purpose) {
        let p = purpose.as_ref().map(LitStr::value).ok_or_else(|| {
            syn::Error::new(span, "`auto_detect` needs a container purpose: #[keyflow(purpose = \"userData\", auto_detect)]")
        })?;
        if names::lists_for_purpose(&p).is_none() {
            return Err(syn::Error::new(
                span,
                format!("purpose `{p}` has no auto-detection list (known: {}); mark the fields with #[encrypted]", names::KNOWN_PURPOSES.join(", ")),
            ));
        }
    }
    let plans = named
        .named
        .iter()
        .map(|f| field_plan(f, &container))
        .collect::<syn::Result<Vec<_>>>()?;
    if plans.iter().all(|p| p.enc.is_none()) {
        return Err(syn::Error::new(
            name.span(),
            "no field is encrypted: mark fields with #[encrypted] or use #[keyflow(purpose = \"…\", auto_detect)]",
        ));
    }
    for p in &plans {
        if p.enc.as_ref().is_some_and(|e| e.mode == Mode::BlindIndex) {
            let bidx = format!("{}_bidx", ident_name(p.ident));
            if plans.iter().any(|q| ident_name(q.ident) == bidx) {
                return Err(syn::Error::new(p.ident.span(), format!("the blind index of this field is stored as `{bidx}`, which the struct already has")));
            }
        }
    }

    let vis = &input.vis;
    let twin = format_ident!("Encrypted{}", name);
    let krate = quote!(::keyflow_fields);
    let service_ty = quote!(#krate::keyflow_kms::EncryptionService);
    let serde_container: Vec<&Attribute> = input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .collect();

    let mut twin_fields = Vec::new();
    let mut enc_inits = Vec::new();
    let mut dec_inits = Vec::new();
    let mut re_lets = Vec::new();
    let mut re_inits = Vec::new();
    for p in &plans {
        let (ident, ty, fvis) = (p.ident, p.ty, p.vis);
        let Some(e) = &p.enc else {
            let attrs = &p.attrs;
            twin_fields.push(quote! { #(#attrs)* #fvis #ident: #ty });
            enc_inits.push(quote! { #ident: ::core::clone::Clone::clone(&self.#ident) });
            dec_inits.push(quote! { #ident: ::core::clone::Clone::clone(&self.#ident) });
            re_inits.push(quote! { #ident: ::core::clone::Clone::clone(&self.#ident) });
            continue;
        };
        let attrs: Vec<&&Attribute> = p.attrs.iter().filter(|a| keeps_on_ciphertext(a)).collect();
        let (purpose, label) = (&e.purpose, &e.label);
        let det = e.mode == Mode::Deterministic;
        twin_fields.push(quote! { #(#attrs)* #fvis #ident: #krate::Encrypted<#ty> });
        enc_inits.push(quote! {
            #ident: #krate::record::encrypt_field(service, &self.#ident, #purpose, #label, #det, binding).await?
        });
        dec_inits.push(quote! {
            #ident: #krate::record::decrypt_field(service, &self.#ident, #label, binding).await?
        });
        let local = format_ident!("__keyflow_{}", ident_name(ident));
        if e.mode == Mode::BlindIndex {
            let bidx = format_ident!("{}_bidx", ident_name(ident));
            let bits = match e.bits {
                Bits::Fixed(n) => quote!(#n),
                Bits::Distinct(n) => quote!(#krate::blind::bits_for_distinct_values(#n)),
            };
            let doc = format!(
                "Blind index of `{}` (search with `keyflow_fields::blind::search_terms`).",
                ident_name(ident)
            );
            twin_fields.push(quote! { #[doc = #doc] #fvis #bidx: #krate::BlindIndexValue });
            enc_inits.push(quote! {
                #bidx: #krate::record::blind_index_field(service, &self.#ident, #purpose, #label, #bits).await?
            });
            let local_bidx = format_ident!("__keyflow_{}_bidx", ident_name(ident));
            re_lets.push(quote! {
                let (#local, #local_bidx) = #krate::record::reencrypt_indexed_field(service, &self.#ident, &self.#bidx, #purpose, #label, #bits, binding).await?;
            });
            re_inits.push(quote! { #ident: #local });
            re_inits.push(quote! { #bidx: #local_bidx });
        } else {
            re_lets.push(quote! {
                let (#local, _) = #krate::record::reencrypt_field(service, &self.#ident, #label, binding).await?;
            });
            re_inits.push(quote! { #ident: #local });
        }
    }

    let twin_doc = format!("The stored form of [`{name}`]: its sensitive fields as `Encrypted<T>` (generated by `#[derive(Encrypt)]`).");
    Ok(quote! {
        #[doc = #twin_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::serde::Serialize, ::serde::Deserialize)]
        #(#serde_container)*
        #vis struct #twin {
            #(#twin_fields,)*
        }

        impl #name {
            /// Encrypts the sensitive fields (AAD: field name, `binding`'s record id and context).
            #vis async fn encrypt(&self, service: &#service_ty, binding: &#krate::Binding) -> #krate::Result<#twin> {
                ::core::result::Result::Ok(#twin { #(#enc_inits,)* })
            }
        }

        impl #twin {
            /// Decrypts the sensitive fields with the binding given at encryption.
            #vis async fn decrypt(&self, service: &#service_ty, binding: &#krate::Binding) -> #krate::Result<#name> {
                ::core::result::Result::Ok(#name { #(#dec_inits,)* })
            }

            /// Re-encrypts every encrypted field under its purpose's active key version
            /// (unchanged fields stay as they are) and recomputes moved blind indexes.
            #vis async fn reencrypt(&self, service: &#service_ty, binding: &#krate::Binding) -> #krate::Result<#twin> {
                #(#re_lets)*
                ::core::result::Result::Ok(#twin { #(#re_inits,)* })
            }
        }
    })
}
