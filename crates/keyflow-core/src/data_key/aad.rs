//! The AAD of an envelope, built on the stack when it fits.

use crate::context::Context;

/// AAD = the header bytes (nonce included) ‖ the canonical context encoding. Built on
/// the stack when it fits (the common case), so a small-field encryption allocates only
/// its output.
#[allow(clippy::large_enum_variant)] // the inline variant is the point: no allocation
pub(super) enum Aad {
    Stack([u8; 256], usize),
    Heap(Vec<u8>),
}

impl Aad {
    pub(super) fn new(header: &[u8], context: &Context) -> Self {
        let len = header.len() + context.encoded_len();
        if len <= 256 {
            let mut buf = [0u8; 256];
            let mut w = crate::context::SliceWriter::new(&mut buf);
            w.put(header);
            context.encode_to(&mut w);
            Aad::Stack(buf, len)
        } else {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(header);
            context.encode_into(&mut v);
            Aad::Heap(v)
        }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Aad::Stack(b, n) => b.get(..*n).unwrap_or_default(),
            Aad::Heap(v) => v,
        }
    }
}
