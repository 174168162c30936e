//! The caller's encryption context: string pairs bound into every ciphertext's AAD.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Most pairs a context may hold.
pub const MAX_CONTEXT_PAIRS: usize = 64;
/// Longest key or value of a context pair, in bytes.
pub const MAX_CONTEXT_ITEM_LEN: usize = 1024;

/// Context keys starting with this are KeyFlow's own (the field layer binds `kf.field`
/// and `kf.doc`). Entry points that take a caller's context — the generic HTTP routes,
/// the CLI's `--context` — refuse them, or anyone allowed a purpose could forge
/// field-layer ciphertexts bound to another document.
pub const RESERVED_PREFIX: &str = "kf.";

/// Key/value pairs (e.g. `recordId=r-1`, `field=ssn`) bound into a ciphertext.
///
/// The same pairs in any order give the same binding: the canonical encoding sorts
/// by key. Decrypting with a different context fails.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Context(BTreeMap<String, String>);

impl Context {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a context from pairs, refusing duplicates and oversize items.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut ctx = Self::new();
        for (k, v) in pairs {
            ctx.insert(k.into(), v.into())?;
        }
        Ok(ctx)
    }

    /// Adds one pair. A key given twice is refused (it would be ambiguous).
    pub fn insert(&mut self, key: String, value: String) -> Result<()> {
        if key.is_empty() || key.len() > MAX_CONTEXT_ITEM_LEN || value.len() > MAX_CONTEXT_ITEM_LEN
        {
            return Err(Error::Invalid(
                "context pair (key 1..=1024 bytes, value ≤ 1024 bytes)",
            ));
        }
        if self.0.len() >= MAX_CONTEXT_PAIRS {
            return Err(Error::Invalid("context (more than 64 pairs)"));
        }
        if self.0.contains_key(&key) {
            return Err(Error::Invalid("context (a key is given twice)"));
        }
        self.0.insert(key, value);
        Ok(())
    }

    /// The first key in KeyFlow's reserved namespace ([`RESERVED_PREFIX`]), if any.
    pub fn reserved_key(&self) -> Option<&str> {
        self.0
            .keys()
            .find(|k| k.starts_with(RESERVED_PREFIX))
            .map(String::as_str)
    }

    /// True when no pair is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Appends the canonical encoding: u32 count, then per pair (sorted by key)
    /// u32 key length, key, u32 value length, value — all big-endian.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_with(|bytes| out.extend_from_slice(bytes));
    }

    /// Writes the canonical encoding into a fixed buffer (see [`SliceWriter`]).
    pub(crate) fn encode_to(&self, w: &mut SliceWriter<'_>) {
        self.encode_with(|bytes| w.put(bytes));
    }

    /// The canonical encoding, written once for both destinations: `put` receives its
    /// pieces in order (a closure, so each caller compiles to direct writes).
    fn encode_with(&self, mut put: impl FnMut(&[u8])) {
        // Lengths are bounded by MAX_CONTEXT_* so the casts cannot truncate.
        put(&(self.0.len() as u32).to_be_bytes());
        for (k, v) in &self.0 {
            put(&(k.len() as u32).to_be_bytes());
            put(k.as_bytes());
            put(&(v.len() as u32).to_be_bytes());
            put(v.as_bytes());
        }
    }

    /// Length of the canonical encoding.
    pub fn encoded_len(&self) -> usize {
        4 + self
            .0
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
    }
}

/// Writes into a fixed slice; the caller sizes it from `encoded_len`, so an overflow
/// cannot happen — if it did, the excess is dropped and the AAD would simply not match.
pub(crate) struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_and_encoding_is_unambiguous() {
        let a = Context::from_pairs([("b", "2"), ("a", "1")]).unwrap();
        let b = Context::from_pairs([("a", "1"), ("b", "2")]).unwrap();
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.encode_into(&mut ea);
        b.encode_into(&mut eb);
        assert_eq!(ea, eb);
        assert_eq!(ea.len(), a.encoded_len());

        // "ab"="" and "a"="b" must not collide.
        let c = Context::from_pairs([("ab", "")]).unwrap();
        let d = Context::from_pairs([("a", "b")]).unwrap();
        let (mut ec, mut ed) = (Vec::new(), Vec::new());
        c.encode_into(&mut ec);
        d.encode_into(&mut ed);
        assert_ne!(ec, ed);
    }

    #[test]
    fn refuses_duplicates_and_oversize() {
        assert!(Context::from_pairs([("a", "1"), ("a", "2")]).is_err());
        assert!(Context::from_pairs([("", "1")]).is_err());
        assert!(Context::from_pairs([("k", "x".repeat(1025))]).is_err());
        let many: Vec<(String, String)> =
            (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(Context::from_pairs(many).is_err());
    }
}
