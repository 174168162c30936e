//! A JSON Schema check of the subset the OpenAPI document uses (`$ref`, `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `oneOf`/`anyOf`/`allOf`,
//! `enum`, `const`, bounds, `pattern`, `format: date-time`), **strict about objects**:
//! a member the schema does not declare is an error, so a writer that adds a member
//! without documenting it fails as surely as one that drops a required member.

use regex::Regex;
use serde_json::Value;

/// Errors of `value` against `schema` (resolving `$ref` in `doc`), each with its JSON
/// path; empty when it conforms.
pub fn check(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(doc, schema, value, "$", &mut errors);
    errors
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            let target = doc.pointer(pointer).unwrap_or(&Value::Null);
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(allowed: &Value, v: &Value) -> bool {
    let t = type_name(v);
    let matches = |a: &Value| a == t || (a == "number" && t == "integer");
    match allowed {
        Value::String(_) => matches(allowed),
        Value::Array(list) => list.iter().any(matches),
        _ => true,
    }
}

fn rfc3339(s: &str) -> bool {
    static RE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
            .unwrap()
    });
    RE.is_match(s)
}

fn walk(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let Some(s) = schema.as_object() else {
        return; // `{}` or `true`: anything
    };
    let mut fail = |msg: String| errors.push(format!("{at}: {msg}"));
    if let Some(t) = s.get("type") {
        if !type_ok(t, v) {
            fail(format!("{} is not of type {t}", type_name(v)));
            return;
        }
    }
    if let Some(list) = s.get("enum").and_then(Value::as_array) {
        if !list.contains(v) {
            fail(format!("{v} is not one of {list:?}"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            fail(format!("{v} is not {c}"));
        }
    }
    if let Some(x) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x < m)
        {
            fail(format!("{x} is below the minimum"));
        }
        if s.get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x > m)
        {
            fail(format!("{x} is above the maximum"));
        }
    }
    if let Some(text) = v.as_str() {
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            match Regex::new(p) {
                Ok(re) if re.is_match(text) => {}
                Ok(_) => fail(format!("{text:?} does not match {p}")),
                Err(e) => fail(format!("bad pattern {p}: {e}")),
            }
        }
        if s.get("format") == Some(&Value::from("date-time")) && !rfc3339(text) {
            fail(format!("{text:?} is not an RFC 3339 date-time"));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                walk(doc, item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
    }
    if let Some(object) = v.as_object() {
        let properties = s.get("properties").and_then(Value::as_object);
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errors.push(format!("{at}: required member {name} is missing"));
            }
        }
        for (name, member) in object {
            let path = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                s.get("additionalProperties"),
            ) {
                (Some(p), _) => walk(doc, p, member, &path, errors),
                (None, Some(extra)) if extra.is_object() => walk(doc, extra, member, &path, errors),
                // Strict: what the schema does not declare is drift.
                (None, _)
                    if properties.is_some()
                        || s.get("additionalProperties") == Some(&Value::Bool(false)) =>
                {
                    errors.push(format!("{path}: not in the schema"))
                }
                (None, _) => {}
            }
        }
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        walk(doc, sub, v, at, errors);
    }
    let branches = |key: &str| -> Option<Vec<Vec<String>>> {
        s.get(key).and_then(Value::as_array).map(|list| {
            list.iter()
                .map(|sub| {
                    let mut e = Vec::new();
                    walk(doc, sub, v, at, &mut e);
                    e
                })
                .collect()
        })
    };
    if let Some(results) = branches("oneOf") {
        let passing = results.iter().filter(|e| e.is_empty()).count();
        if passing != 1 {
            errors.push(format!(
                "{at}: matches {passing} of the oneOf branches, not 1: {results:?}"
            ));
        }
    }
    if let Some(results) = branches("anyOf") {
        if !results.iter().any(Vec::is_empty) {
            errors.push(format!("{at}: matches no anyOf branch: {results:?}"));
        }
    }
}
