//! Request schemas as strict as the server: what the handlers check beyond the types
//! (ciphertext and base64 syntax, selectors, ranges, instants, enums, one-of rules) is
//! written into the document here, so that a request valid by the schema is one the
//! server accepts and one invalid by it is refused (Schemathesis checks both ways).
//!
//! Applied to the generated JSON because utoipa's attributes cannot say all of it
//! (`propertyNames`, `oneOf` of required members, `if`/`then`). Every target must exist:
//! [`apply`] returns the ones it did not find, and a unit test asserts there are none,
//! so a renamed field cannot leave its rule behind silently.

use serde_json::{json, Map, Value};

use super::responses::CIPHERTEXT_PATTERN;

/// White space as Rust's `str::trim` sees it (Unicode `White_Space`), for use inside a
/// character class: the handlers trim it around values, and a query parameter that is
/// only white space counts as absent. (Regex `\s` differs: it takes U+001C..U+001F.)
const WS_CHARS: &str =
    r"\t\n\u000B\u000C\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// Standard base64, padding optional, canonical final bits (what the data routes'
/// decoder accepts).
const BASE64: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw](?:==)?|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=?)?$";

/// The body of padded base64 in `alphabet` (a character class), canonical final bits.
fn padded(alphabet: &str) -> String {
    format!(
        "(?:{a}{{4}})*(?:{a}[AQgw]==|{a}{{2}}[AEIMQUYcgkosw048]=)?",
        a = alphabet
    )
}

/// The body of unpadded base64 in `alphabet`, canonical final bits.
fn unpadded(alphabet: &str) -> String {
    format!(
        "(?:{a}{{4}})*(?:{a}[AQgw]|{a}{{2}}[AEIMQUYcgkosw048])?",
        a = alphabet
    )
}

/// `body` with the white space the handler trims around it.
fn trimmed(body: &str) -> String {
    format!("^[{WS_CHARS}]*{body}[{WS_CHARS}]*$")
}

/// A field selector (docs/field-encryption.md): names, `.name`, `.*`, `[n]`, `[*]`,
/// `[]`, `["quoted"]`, surrounding white space ignored. A `fields` entry of
/// `/encrypt-fields` may end in a mode (`:deterministic`, `:blind_index/16`); since a
/// name may hold `:`, that form is a selector too. A blind-index `path` names one
/// member: no `*` member (array indexes are dropped from its label, so `[*]` is fine).
///
/// `member`: the selector ends in a member (a name, `*` or `["quoted"]`), never in an
/// array index — a blind index is written beside its field, so only object members
/// can carry one.
fn selector(star: bool, member: bool) -> String {
    let ws = format!("[{WS_CHARS}]");
    // A name holds anything but `.`, `[`, `]`, `*`, `"`; the handler trims each name and
    // the whole selector, so a name ends in (and the selector starts with) no space.
    let name = format!(r#"[^.\[\]*"]*[^.\[\]*"{WS_CHARS}]"#);
    let star = if star {
        format!(r"|{ws}*\*{ws}*")
    } else {
        String::new()
    };
    let index = format!(r"\[{ws}*(?:\*|[0-9]{{1,18}})?{ws}*\]");
    let quoted = r#"\["(?:[^"\\]|\\[\s\S])*"\]"#;
    let first = format!(r#"{ws}*[^.\[\]*"{WS_CHARS}](?:[^.\[\]*"]*[^.\[\]*"{WS_CHARS}])?"#);
    let head_member = format!("{first}{star}|{ws}*{quoted}");
    let tail_member = format!(r"\.(?:{name}{star})|{quoted}");
    if member {
        format!(
            r"^(?:{head_member}|(?:{head_member}|{ws}*{index})(?:{tail_member}|{index})*(?:{tail_member})){ws}*"
        )
    } else {
        format!(r"^(?:{head_member}|{ws}*{index})(?:{tail_member}|{index})*{ws}*$")
    }
}

/// The mode suffix of a blind-index `fields` entry (`:blind_index`, `:blindIndex/16`).
fn blind_suffix() -> String {
    // Bits 8..=256: any other number is not a mode, and the whole entry is then read
    // as a selector.
    format!(
        r":[{WS_CHARS}]*(?:blind_index|blindIndex|blind)(?:/0*(?:[89]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-6]))?[{WS_CHARS}]*$"
    )
}

/// A selector schema (see [`selector`]).
fn selector_schema(star: bool) -> Value {
    json!({ "type": "string", "pattern": selector(star, false) })
}

/// A context key: 1 to 1024 bytes, not in the `kf.` namespace the field layer sets.
const CONTEXT_KEY: &str = r"^(?:[^k]|k[^f]|kf[^.]|kf?$)";

/// The purposes with detection lists (auto-detection refuses any other).
const DETECTION_PURPOSES: &[&str] = keyflow_fields::names::KNOWN_PURPOSES;

/// Any JSON value but `null` (the data routes refuse a `null` to encrypt).
fn not_null() -> Value {
    json!({ "type": ["string", "number", "integer", "boolean", "array", "object"] })
}

/// Sets each keyword of `rules` in `schema` (replacing it whole); a `null` rule removes
/// the keyword (`"format": null` drops utoipa's `int64` where the bound is wider).
fn merge(schema: &mut Map<String, Value>, rules: Map<String, Value>) {
    for (keyword, rule) in rules {
        if rule.is_null() {
            schema.remove(&keyword);
        } else {
            schema.insert(keyword, rule);
        }
    }
}

/// Edits the document, and collects what it could not find.
struct Patch<'a> {
    doc: &'a mut Value,
    missing: Vec<String>,
}

impl Patch<'_> {
    /// The schema named `name`.
    fn schema(&mut self, name: &str) -> Option<&mut Map<String, Value>> {
        let found = self.doc["components"]["schemas"]
            .get_mut(name)
            .and_then(Value::as_object_mut);
        if found.is_none() {
            self.missing.push(format!("schema {name}"));
        }
        found
    }

    /// Merges `rules` into the schema `name` itself.
    fn on_schema(&mut self, name: &str, rules: Value) {
        if let (Some(schema), Value::Object(rules)) = (self.schema(name), rules) {
            merge(schema, rules);
        }
    }

    /// Merges `rules` into property `prop` of schema `name`.
    fn on(&mut self, name: &str, prop: &str, rules: Value) {
        let target = self
            .schema(name)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(prop))
            .and_then(Value::as_object_mut);
        match (target, rules) {
            (Some(target), Value::Object(rules)) => merge(target, rules),
            _ => self.missing.push(format!("{name}.{prop}")),
        }
    }

    /// Makes properties of schema `name` required.
    fn require(&mut self, name: &str, props: &[&str]) {
        if let Some(schema) = self.schema(name) {
            let required = schema
                .entry("required")
                .or_insert_with(|| json!([]))
                .as_array_mut();
            if let Some(required) = required {
                for p in props {
                    if !required.iter().any(|r| r == p) {
                        required.push(json!(p));
                    }
                }
            }
        }
    }

    /// Marks the request body of `POST path` optional.
    fn optional_body(&mut self, path: &str) {
        match self.doc["paths"]
            .get_mut(path)
            .and_then(|p| p.get_mut("post"))
            .and_then(|op| op.get_mut("requestBody"))
        {
            Some(body) => body["required"] = json!(false),
            None => self.missing.push(format!("post {path} body")),
        }
    }

    /// Merges `rules` into the schema of query parameter `param` of `method path`.
    fn on_param(&mut self, path: &str, method: &str, param: &str, rules: Value) {
        let target = self.doc["paths"]
            .get_mut(path)
            .and_then(|p| p.get_mut(method))
            .and_then(|op| op.get_mut("parameters"))
            .and_then(Value::as_array_mut)
            .and_then(|ps| ps.iter_mut().find(|p| p["name"] == param));
        match (target, rules) {
            (Some(p), Value::Object(rules)) => {
                if let Some(required) = rules.get("x-required") {
                    p["required"] = required.clone();
                }
                if let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) {
                    let mut rules = rules;
                    rules.remove("x-required");
                    merge(schema, rules);
                }
            }
            _ => self.missing.push(format!("{method} {path} ?{param}")),
        }
    }
}

/// The caller's context: string pairs, at most 64, keys 1..=1024 bytes outside `kf.`,
/// values ≤ 1024 bytes (`maxLength` counts characters: a value of multi-byte characters
/// can be refused below it).
fn context(max_pairs: u32) -> Value {
    json!({
        "type": ["object", "null"],
        "maxProperties": max_pairs,
        "propertyNames": { "type": "string", "minLength": 1, "maxLength": 1024, "pattern": CONTEXT_KEY },
        "additionalProperties": { "type": "string", "maxLength": 1024 },
    })
}

/// Applies every rule; returns the targets that were not found (none, when the
/// document and this table agree).
pub(super) fn apply(doc: &mut Value) -> Vec<String> {
    let mut p = Patch {
        doc,
        missing: Vec::new(),
    };
    let ciphertext = json!({ "type": "string", "pattern": CIPHERTEXT_PATTERN });
    // An RFC 3339 instant; in a body also `null` (absent), in a query also blank (the
    // handlers treat a blank parameter as absent).
    let instant = json!({ "type": null, "format": null,
        "anyOf": [{ "type": "string", "format": "date-time" }, { "type": "null" }] });
    let instant_param = json!({ "type": "string",
        "anyOf": [{ "format": "date-time" }, { "pattern": trimmed("") }] });

    // Data routes.
    for name in [
        "EncryptRequest",
        "DecryptRequest",
        "BatchEncryptRequest",
        "BatchDecryptRequest",
        "RewrapRequest",
    ] {
        p.on(name, "context", context(64));
    }
    for name in ["EncryptFieldsRequest", "DecryptFieldsRequest"] {
        p.on(name, "context", context(64));
        p.on(
            name,
            "documentId",
            json!({ "type": ["string", "null"], "maxLength": 1024 }),
        );
    }
    let encoding = json!({ "type": ["string", "null"], "enum": ["base64", null] });
    p.on("EncryptRequest", "data", not_null());
    p.on("EncryptRequest", "encoding", encoding.clone());
    p.require("EncryptRequest", &["data"]);
    // With `encoding: base64`, `data` is base64 text of raw bytes.
    p.on_schema(
        "EncryptRequest",
        json!({
            "if": { "properties": { "encoding": { "const": "base64" } }, "required": ["encoding"] },
            "then": { "properties": { "data": { "type": "string", "pattern": BASE64 } } },
        }),
    );
    p.on("DecryptRequest", "encryptedData", ciphertext.clone());
    p.on(
        "BatchEncryptRequest",
        "items",
        json!({ "type": "array", "maxItems": 1000, "items": {},
                "description": "Plain values, at most 1000 (KEYFLOW_MAX_BATCH_ITEMS). An item that cannot be encrypted (null; not base64 with `encoding`) fails alone, inside the 200." }),
    );
    // An unknown encoding fails each item inside the 200 (as a bad item does), so the
    // batch schema takes any string.
    p.on(
        "BatchEncryptRequest",
        "encoding",
        json!({ "type": ["string", "null"],
                "description": "As for `/encrypt`: `base64` or absent; any other value fails every item (inside the 200)." }),
    );
    p.on(
        "BatchDecryptRequest",
        "items",
        json!({ "type": "array", "maxItems": 1000, "items": {},
                "description": "Ciphertext strings, at most 1000 (KEYFLOW_MAX_BATCH_ITEMS). An item that is not a ciphertext (or not a string) fails alone, inside the 200." }),
    );
    p.on("BlindIndexRequest", "data", not_null());
    p.require("BlindIndexRequest", &["data"]);
    p.on(
        "BlindIndexRequest",
        "bits",
        json!({ "minimum": 8, "maximum": 256 }),
    );
    p.on(
        "BlindIndexRequest",
        "path",
        json!({ "type": null, "anyOf": [selector_schema(false), { "type": "null" }] }),
    );
    p.on(
        "BlindIndexRequest",
        "expectedDistinct",
        json!({ "format": null, "minimum": 0, "maximum": u64::MAX }),
    );
    p.on_schema(
        "BlindIndexRequest",
        json!({
            // Exactly one of `field` and `path`, and not both `bits` and `expectedDistinct`.
            "oneOf": [
                { "required": ["field"], "properties": { "field": { "type": "string" } } },
                { "required": ["path"], "properties": { "path": { "type": "string" } } },
            ],
            "not": {
                "required": ["bits", "expectedDistinct"],
                "properties": { "bits": { "type": "integer" }, "expectedDistinct": { "type": "integer" } },
            },
        }),
    );
    p.on(
        "MaskRequest",
        "data",
        json!({ "type": ["string", "number"] }),
    );
    p.require("MaskRequest", &["data"]);
    p.on(
        "MaskRequest",
        "type",
        json!({ "type": ["string", "null"],
                "enum": ["card", "bankAccount", "ssn", "phone", "email", "iban", "default", null] }),
    );

    // Field routes.
    let document = json!({ "type": ["object", "array"] });
    p.on("EncryptFieldsRequest", "data", document.clone());
    p.on("DecryptFieldsRequest", "data", document);
    p.require("EncryptFieldsRequest", &["data"]);
    p.require("DecryptFieldsRequest", &["data"]);
    p.on(
        "EncryptFieldsRequest",
        "fields",
        json!({ "type": ["array", "null"], "items": { "$ref": "#/components/schemas/FieldEntry" } }),
    );
    p.on(
        "EncryptFieldsRequest",
        "sadPolicy",
        json!({ "type": ["string", "null"], "enum": ["strip", "reject", null] }),
    );
    p.on(
        "DecryptFieldsRequest",
        "fields",
        json!({ "type": ["array", "null"], "items": selector_schema(true) }),
    );
    p.on_schema(
        "EncryptFieldsRequest",
        json!({
            // Something to encrypt; auto-detection only for a purpose with lists.
            "anyOf": [
                { "required": ["fields"], "properties": { "fields": { "type": "array", "minItems": 1 } } },
                { "required": ["autoDetect"], "properties": { "autoDetect": { "const": true } } },
            ],
            "if": { "required": ["autoDetect"], "properties": { "autoDetect": { "const": true } } },
            "then": { "properties": { "purpose": { "enum": DETECTION_PURPOSES } } },
        }),
    );
    p.on_schema(
        "FieldEntry",
        json!({
            "oneOf": [
                {
                    "type": "string",
                    "anyOf": [
                        // A selector, maybe with a mode (not a blind index)…
                        { "pattern": selector(true, false), "not": { "pattern": blind_suffix() } },
                        // …or a member's selector with a blind-index mode.
                        { "pattern": format!("{}{}", selector(true, true), blind_suffix()) },
                    ],
                },
                {
                    "type": "object",
                    "required": ["path"],
                    "properties": {
                        "path": selector_schema(true),
                        "mode": { "type": ["string", "null"], "enum": ["randomized", "deterministic", "blindIndex", "blind_index", "blind", null] },
                        "bits": { "type": ["integer", "null"], "minimum": 8, "maximum": 256 },
                    },
                    "allOf": [
                        // `bits` only with a blind-index mode.
                        {
                            "if": { "required": ["bits"], "properties": { "bits": { "type": "integer" } } },
                            "then": { "required": ["mode"], "properties": { "mode": { "enum": ["blindIndex", "blind_index", "blind"] } } },
                        },
                        // A blind index only on a member.
                        {
                            "if": { "required": ["mode"], "properties": { "mode": { "enum": ["blindIndex", "blind_index", "blind"] } } },
                            "then": { "properties": { "path": { "pattern": format!("{}$", selector(true, true)) } } },
                        },
                    ],
                },
            ],
        }),
    );

    // File routes.
    let name = json!({ "type": ["string", "null"], "minLength": 1, "maxLength": 1024 });
    let mime = json!({ "type": ["string", "null"], "minLength": 1, "maxLength": 255, "pattern": "^[ -~]*$" });
    let standard = trimmed(&padded("[A-Za-z0-9+/]"));
    p.on("EncryptFileRequest", "data", json!({ "pattern": standard }));
    p.on("EncryptFileRequest", "fileName", name.clone());
    p.on("EncryptFileRequest", "mimeType", mime.clone());
    p.on(
        "DecryptFileRequest",
        "encryptedData",
        json!({ "pattern": standard }),
    );
    let files = "/api/encryption/files/encrypt";
    // No body is an empty file (encrypted like any other).
    p.optional_body(files);
    p.on_param(
        files,
        "post",
        "purpose",
        json!({ "type": "string", "x-required": true }),
    );
    p.on_param(files, "post", "name", name);
    p.on_param(files, "post", "mime", mime);

    // Keys and lifecycle.
    p.on(
        "GenerateRequest",
        "keyType",
        json!({ "type": ["string", "null"],
                "pattern": trimmed(r"(?:[Aa][Ee][Ss](?:-256(?:-[Gg][Cc][Mm])?|256)|[Dd][Aa][Tt][Aa])") }),
    );
    // `const: true`, which utoipa's attributes cannot write.
    p.on("DestroyRequest", "confirm", json!({ "const": true }));
    p.on(
        "PolicyRequest",
        "rotationDays",
        json!({ "minimum": 1, "maximum": 3650 }),
    );
    p.on("PolicyRequest", "graceDays", json!({ "maximum": 3650 }));
    p.on("PolicyRequest", "warnDays", json!({ "maximum": 3649 }));
    p.on(
        "PolicyRequest",
        "maxEncryptions",
        json!({ "format": null, "minimum": 1, "maximum": 1_u64 << 32 }),
    );
    p.on("RotateDueRequest", "at", instant);
    p.on(
        "RewrapRequest",
        "encryptedData",
        json!({ "type": ["string", "null"], "pattern": CIPHERTEXT_PATTERN }),
    );
    p.on(
        "RewrapRequest",
        "items",
        json!({ "type": ["array", "null"], "maxItems": 1000, "items": { "type": "string" } }),
    );
    p.on_schema(
        "RewrapRequest",
        json!({
            // Exactly one of `encryptedData` and `items`.
            "oneOf": [
                { "required": ["encryptedData"], "properties": { "encryptedData": { "type": "string" } },
                  "not": { "required": ["items"], "properties": { "items": { "type": "array" } } } },
                { "required": ["items"], "properties": { "items": { "type": "array" } },
                  "not": { "required": ["encryptedData"], "properties": { "encryptedData": { "type": "string" } } } },
            ],
        }),
    );
    let password = json!({ "minLength": 16 });
    p.on("BackupRequest", "password", password.clone());
    p.on("RestoreRequest", "password", password);
    p.on(
        "RestoreRequest",
        "backup",
        // STANDARD, URL_SAFE or URL_SAFE_NO_PAD (`routes::backup::decode_backup`).
        json!({ "pattern": trimmed(&format!(
            "(?:{}|{}|{})",
            padded("[A-Za-z0-9+/]"),
            padded("[A-Za-z0-9_-]"),
            unpadded("[A-Za-z0-9_-]")
        )) }),
    );
    p.on_param(
        "/api/encryption/keys",
        "get",
        "status",
        json!({ "enum": ["active", "rotating", "deprecated", "revoked", "destroyed"] }),
    );
    p.on_param(
        "/api/encryption/status",
        "get",
        "shape",
        json!({ "enum": ["current", "legacy"] }),
    );

    // Audit and compliance: empty values count as absent.
    let audit = "/api/encryption/audit";
    for name in ["since", "until"] {
        p.on_param(audit, "get", name, instant_param.clone());
    }
    p.on_param(
        audit,
        "get",
        "limit",
        json!({ "pattern": trimmed("(?:0*(?:[1-9][0-9]{0,2}|1000))?") }),
    );
    p.on_param(
        audit,
        "get",
        "cursor",
        json!({ "pattern": trimmed("(?:0*[1-9][0-9]{0,18})?") }),
    );
    let compliance = "/api/encryption/compliance";
    p.on_param(compliance, "get", "at", instant_param);
    p.on_param(
        compliance,
        "get",
        "format",
        json!({ "enum": ["json", "markdown", "md", "html", ""] }),
    );
    p.missing
}

#[cfg(test)]
mod tests {
    use keyflow_fields::{FieldSpec, Selector};
    use regex::Regex;

    /// The selector patterns admit what the parser accepts (the documented forms), and
    /// never a selector the parser refuses.
    #[test]
    fn selector_patterns_agree_with_the_parser() {
        let any = Regex::new(&super::selector(true, false)).unwrap();
        let member = Regex::new(&format!("{}$", super::selector(true, true))).unwrap();
        let blind = Regex::new(&format!(
            "{}{}",
            super::selector(true, true),
            super::blind_suffix()
        ))
        .unwrap();
        let valid = [
            "a",
            "a.b.c",
            "cards[*].cardNumber",
            "a[]",
            "a[2]",
            "a.*",
            "*",
            r#"["odd.key"]"#,
            r#"a["x\"y"].b"#,
            "  a.b\t",
            "[0]",
            "a[ * ]",
            "a:b",
        ];
        for s in valid {
            assert!(any.is_match(s), "{s:?} should match");
            assert!(s.parse::<Selector>().is_ok(), "{s:?}");
        }
        let tricky = [
            "", " ", "\u{b}.00", "E.\t", "a.", ".a", "a..b", "a[", "a]", "a[x]", "a*b", "a\"b",
            "[\"open", "a. ", "a.[0]", "a[0]b", "a[-1]", "*.",
        ];
        for s in valid.iter().chain(tricky.iter()) {
            if any.is_match(s) {
                assert!(
                    s.parse::<Selector>().is_ok(),
                    "{s:?} matches but does not parse"
                );
            }
        }
        for s in ["a", "a.b", "a[0].b", "*", r#"a["k"]"#] {
            assert!(member.is_match(s), "{s:?}");
            let spec: FieldSpec = format!("{s}:blind_index/16").parse().unwrap();
            assert!(matches!(spec.mode, keyflow_fields::Mode::BlindIndex { .. }));
            assert!(blind.is_match(&format!("{s}:blind_index/16")), "{s:?}");
        }
        for s in ["a[0]", "a[*]", "[0]"] {
            assert!(!member.is_match(s), "{s:?}");
        }
        for bits in ["0", "7", "257", "x"] {
            let entry = format!(r#"["k"] :blind_index/{bits}"#);
            assert!(!blind.is_match(&entry), "{entry:?}");
            assert!(entry.parse::<FieldSpec>().is_err(), "{entry:?}");
        }
    }
}
