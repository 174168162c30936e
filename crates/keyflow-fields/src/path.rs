//! Field selectors (`profile.address`, `cards[*].cardNumber`) and the concrete paths of
//! the values they match.
//!
//! ## Selector syntax
//!
//! | form | matches |
//! |---|---|
//! | `a.b.c` | member `c` of member `b` of member `a` |
//! | `a[*]` (or `a[]`) | every element of the array `a` |
//! | `a[2]` | element 2 (from 0) of the array `a` |
//! | `a.*` | every member of the object `a` |
//! | `["odd.key"]` | a member whose name holds `.`, `[`, `]`, `*` or `"` (`\"` and `\\` escape) |
//!
//! Member names match in any naming style: `phoneNumber`, `phone_number`,
//! `phone-number` and `PhoneNumber` are one name (see [`crate::names::same_name`]).
//!
//! Each matched value has a **concrete path** (`cards[0].cardNumber`, used in reports
//! and errors) and a **label** (`cards[].cardnumber`: names normalized, array indexes
//! dropped) that is bound into the value's AAD and keys its blind index. Dropping the
//! indexes keeps ciphertexts valid when array elements are inserted, removed or
//! reordered; the cost is that two elements of one array can swap values unnoticed.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::error::FieldsError;
use crate::names::{normalize, normalized_eq};

/// One step of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A member of an object, matched in any naming style.
    Key(String),
    /// Every member of an object (`*`).
    AnyKey,
    /// One element of an array (`[2]`).
    Index(usize),
    /// Every element of an array (`[*]`).
    AnyIndex,
}

/// A parsed field selector. Parse, don't validate: made once, from a string, at the
/// boundary (`"cards[*].cardNumber".parse::<Selector>()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    segments: Vec<Segment>,
    /// The normalized name of each `Key` segment (empty for the others).
    normalized: Vec<String>,
    text: String,
}

impl Selector {
    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every value of `doc` this selector matches, with its concrete path.
    pub fn matches(&self, doc: &Value) -> Vec<ConcretePath> {
        let mut out = Vec::new();
        collect(
            doc,
            &self.segments,
            &self.normalized,
            &mut Vec::new(),
            &mut out,
        );
        out
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn collect<'a>(
    value: &'a Value,
    segs: &[Segment],
    norms: &[String],
    at: &mut Vec<StepRef<'a>>,
    out: &mut Vec<ConcretePath>,
) {
    let (Some((first, rest)), Some((norm, norms))) = (segs.split_first(), norms.split_first())
    else {
        out.push(ConcretePath::from_refs(at));
        return;
    };
    match (first, value) {
        (Segment::Key(_), Value::Object(map)) => {
            for (k, v) in map {
                if normalized_eq(k, norm) {
                    at.push(StepRef::Key(k));
                    collect(v, rest, norms, at, out);
                    at.pop();
                }
            }
        }
        (Segment::AnyKey, Value::Object(map)) => {
            for (k, v) in map {
                at.push(StepRef::Key(k));
                collect(v, rest, norms, at, out);
                at.pop();
            }
        }
        (Segment::Index(i), Value::Array(items)) => {
            if let Some(v) = items.get(*i) {
                at.push(StepRef::Index(*i));
                collect(v, rest, norms, at, out);
                at.pop();
            }
        }
        (Segment::AnyIndex, Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                at.push(StepRef::Index(i));
                collect(v, rest, norms, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

impl FromStr for Selector {
    type Err = FieldsError;

    fn from_str(s: &str) -> Result<Self, FieldsError> {
        let bad = |reason: &'static str| FieldsError::InvalidSelector {
            selector: s.to_owned(),
            reason,
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(bad("empty selector"));
        }
        let chars: Vec<char> = text.chars().collect();
        let mut segments = Vec::new();
        let mut i = 0;
        // True where a member name may start without a dot (the very beginning).
        let mut expect_name = true;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    if expect_name {
                        return Err(bad("a '.' must follow a name or ']'"));
                    }
                    expect_name = true;
                    i += 1;
                    if i >= chars.len() {
                        return Err(bad("ends with '.'"));
                    }
                    if chars[i] == '[' || chars[i] == '.' {
                        return Err(bad("a name must follow '.'"));
                    }
                }
                '[' => {
                    i += 1;
                    let seg = if chars.get(i) == Some(&'"') {
                        let (name, next) = quoted(&chars, i + 1).ok_or_else(|| {
                            bad("unterminated quoted name (\"…\"]; escape \" and \\ with \\)")
                        })?;
                        i = next;
                        Segment::Key(name)
                    } else {
                        let start = i;
                        while i < chars.len() && chars[i] != ']' {
                            i += 1;
                        }
                        let inner: String = chars[start..i.min(chars.len())].iter().collect();
                        match inner.trim() {
                            "" | "*" => Segment::AnyIndex,
                            n => Segment::Index(
                                n.parse()
                                    .map_err(|_| bad("an index is a number, '*' or empty"))?,
                            ),
                        }
                    };
                    if chars.get(i) != Some(&']') {
                        return Err(bad("missing ']'"));
                    }
                    i += 1;
                    segments.push(seg);
                    expect_name = false;
                }
                ']' => return Err(bad("unexpected ']'")),
                _ => {
                    if !expect_name {
                        return Err(bad("names are separated by '.'"));
                    }
                    let start = i;
                    while i < chars.len() && !matches!(chars[i], '.' | '[' | ']') {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    let name = name.trim();
                    if name == "*" {
                        segments.push(Segment::AnyKey);
                    } else if name.contains('*') || name.contains('"') {
                        return Err(bad("'*' and '\"' in a name need the [\"…\"] form"));
                    } else {
                        segments.push(Segment::Key(name.to_owned()));
                    }
                    expect_name = false;
                }
            }
        }
        let normalized = segments
            .iter()
            .map(|seg| match seg {
                Segment::Key(k) => normalize(k),
                _ => String::new(),
            })
            .collect();
        Ok(Selector {
            segments,
            normalized,
            text: text.to_owned(),
        })
    }
}

/// Reads a quoted name starting after the opening quote; returns it and the index
/// after the closing quote.
fn quoted(chars: &[char], mut i: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                out.push(*chars.get(i + 1)?);
                i += 2;
            }
            '"' => return Some((out, i + 1)),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// One step of a concrete path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// A member, by its name in the document.
    Key(String),
    /// An array element.
    Index(usize),
}

/// A step borrowed from the document being walked: walks allocate nothing until they
/// find something.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StepRef<'a> {
    Key(&'a str),
    Index(usize),
}

/// The member name a walk's path ends in (`None` at the root or an array element).
pub(crate) fn member<'a>(at: &[StepRef<'a>]) -> Option<&'a str> {
    match at.last() {
        Some(StepRef::Key(name)) => Some(name),
        _ => None,
    }
}

/// Walks `doc` depth first, members in document order: `visit` sees every value (the
/// document itself first) with its path, and answers whether to go into it. The one
/// walk of the searches that look at the whole document (detectors, sensitive
/// authentication data, auto-detection, ciphertexts).
pub(crate) fn walk<'a>(doc: &'a Value, mut visit: impl FnMut(&'a Value, &[StepRef<'a>]) -> bool) {
    fn go<'a>(
        value: &'a Value,
        at: &mut Vec<StepRef<'a>>,
        visit: &mut impl FnMut(&'a Value, &[StepRef<'a>]) -> bool,
    ) {
        if !visit(value, at) {
            return;
        }
        match value {
            Value::Object(map) => {
                for (k, child) in map {
                    at.push(StepRef::Key(k));
                    go(child, at, visit);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(StepRef::Index(i));
                    go(child, at, visit);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    go(doc, &mut Vec::new(), &mut visit);
}

/// Where one value sits in one document (`cards[0].cardNumber`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConcretePath(Vec<Step>);

impl ConcretePath {
    /// The document itself.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// The owned path of a walk's borrowed steps.
    pub(crate) fn from_refs(steps: &[StepRef<'_>]) -> Self {
        Self(
            steps
                .iter()
                .map(|s| match s {
                    StepRef::Key(k) => Step::Key((*k).to_owned()),
                    StepRef::Index(i) => Step::Index(*i),
                })
                .collect(),
        )
    }

    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    /// Appends a step.
    pub fn push(&mut self, step: Step) {
        self.0.push(step);
    }

    /// Removes the last step.
    pub fn pop(&mut self) -> Option<Step> {
        self.0.pop()
    }

    /// True when `self` is `other` or inside it.
    pub fn starts_with(&self, other: &ConcretePath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The array indexes along the path, outermost first (`cards[2].tags[0]` → 2, 0).
    pub fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().filter_map(|s| match s {
            Step::Index(i) => Some(*i),
            Step::Key(_) => None,
        })
    }

    /// The name of the member this path ends in (`None` for an array element or the root).
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Step::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The label bound into the value's AAD and keying its blind index: member names
    /// normalized, array indexes dropped (`cards[].cardnumber`).
    pub fn label(&self) -> String {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    // The same normalization as `names::normalize`, written straight
                    // into the label (this runs once per encrypted value).
                    for c in k.chars().filter(|c| !matches!(c, '_' | '-' | ' ' | '.')) {
                        for c in c.to_lowercase() {
                            // Escape the characters that carry structure, so two
                            // different paths never share a label.
                            if matches!(c, '[' | ']' | '\\') {
                                out.push('\\');
                            }
                            out.push(c);
                        }
                    }
                }
                Step::Index(_) => out.push_str("[]"),
            }
        }
        out
    }

    /// The value at this path.
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(doc, |v, step| match (step, v) {
            (Step::Key(k), Value::Object(m)) => m.get(k),
            (Step::Index(i), Value::Array(a)) => a.get(*i),
            _ => None,
        })
    }

    /// The value at this path, mutably.
    pub fn get_mut<'a>(&self, doc: &'a mut Value) -> Option<&'a mut Value> {
        get_mut_steps(&self.0, doc)
    }

    /// The object holding the member this path ends in, and that member's name.
    pub fn parent_object_mut<'a>(
        &self,
        doc: &'a mut Value,
    ) -> Option<(&'a mut serde_json::Map<String, Value>, &str)> {
        let (last, parent) = self.0.split_last()?;
        let Step::Key(name) = last else { return None };
        match get_mut_steps(parent, doc)? {
            Value::Object(m) => Some((m, name.as_str())),
            _ => None,
        }
    }
}

fn get_mut_steps<'a>(steps: &[Step], doc: &'a mut Value) -> Option<&'a mut Value> {
    steps.iter().try_fold(doc, |v, step| match (step, v) {
        (Step::Key(k), Value::Object(m)) => m.get_mut(k),
        (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

fn needs_quotes(k: &str) -> bool {
    k.is_empty()
        || k.trim() != k
        || k.chars()
            .any(|c| matches!(c, '.' | '[' | ']' | '*' | '"' | '\\'))
}

impl fmt::Display for ConcretePath {
    /// The path in selector syntax: it parses back into a selector that matches it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if needs_quotes(k) => {
                    f.write_str("[\"")?;
                    for c in k.chars() {
                        if matches!(c, '"' | '\\') {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"]")?;
                }
                Step::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> Selector {
        s.parse().unwrap()
    }

    fn found(s: &str, doc: &Value) -> Vec<String> {
        sel(s).matches(doc).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            sel("profile.address").segments(),
            &[
                Segment::Key("profile".into()),
                Segment::Key("address".into())
            ]
        );
        assert_eq!(
            sel("cards[*].cardNumber").segments(),
            &[
                Segment::Key("cards".into()),
                Segment::AnyIndex,
                Segment::Key("cardNumber".into())
            ]
        );
        assert_eq!(sel("a[]").segments()[1], Segment::AnyIndex);
        assert_eq!(sel("a[2]").segments()[1], Segment::Index(2));
        assert_eq!(sel("a.*").segments()[1], Segment::AnyKey);
        assert_eq!(
            sel(r#"["odd.key"].x"#).segments(),
            &[Segment::Key("odd.key".into()), Segment::Key("x".into())]
        );
        assert_eq!(
            sel(r#"a["q\"uo\\te"]"#).segments()[1],
            Segment::Key("q\"uo\\te".into())
        );
        assert_eq!(sel("m[0][1]").segments().len(), 3);
    }

    #[test]
    fn refuses_malformed_selectors() {
        for bad in [
            "", ".a", "a.", "a..b", "a.[0]", "a[x]", "a[0", "a]", "a*b", r#"a["x"#, "a[0]b",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matches_nested_objects_and_arrays_in_any_naming_style() {
        let doc = json!({
            "profile": {"phone_number": "1", "address": {"city": "x"}},
            "cards": [{"CardNumber": "a"}, {"card-number": "b"}, {"other": 1}],
            "matrix": [[1, 2], [3]]
        });
        assert_eq!(found("profile.phoneNumber", &doc), ["profile.phone_number"]);
        assert_eq!(found("profile.address", &doc), ["profile.address"]);
        assert_eq!(
            found("cards[*].cardNumber", &doc),
            ["cards[0].CardNumber", "cards[1].card-number"]
        );
        assert_eq!(
            found("cards[1].card_number", &doc),
            ["cards[1].card-number"]
        );
        assert_eq!(
            found("matrix[*][0]", &doc),
            ["matrix[0][0]", "matrix[1][0]"]
        );
        assert_eq!(found("profile.*", &doc).len(), 2);
        assert!(found("profile.missing", &doc).is_empty());
        assert!(
            found("cards.cardNumber", &doc).is_empty(),
            "arrays need [*]"
        );
    }

    #[test]
    fn labels_normalize_names_and_drop_indexes() {
        let doc = json!({"cards": [{"card_number": 1}, {"CardNumber": 2}]});
        let paths = sel("cards[*].cardNumber").matches(&doc);
        assert_eq!(paths[0].label(), "cards[].cardnumber");
        assert_eq!(paths[0].label(), paths[1].label());
        let odd = ConcretePath(vec![Step::Key("a[]".into())]);
        let arr = ConcretePath(vec![Step::Key("a".into()), Step::Index(0)]);
        assert_ne!(odd.label(), arr.label());
    }

    #[test]
    fn display_round_trips_through_the_parser() {
        let doc = json!({"we.ird": {"x y": [{" k": 1}]}, "plain": {"q\"": 2}});
        for p in sel("*").matches(&doc) {
            let s = p.to_string();
            let _ = sel(&s);
        }
        let p = ConcretePath(vec![
            Step::Key("we.ird".into()),
            Step::Key("x y".into()),
            Step::Index(0),
            Step::Key(" k".into()),
        ]);
        assert_eq!(p.to_string(), r#"["we.ird"].x y[0][" k"]"#);
        assert_eq!(sel(&p.to_string()).matches(&doc), vec![p.clone()]);
        assert_eq!(p.get(&doc), Some(&json!(1)));
    }
}
