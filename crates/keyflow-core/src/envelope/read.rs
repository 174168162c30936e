//! Reading envelopes. Every length is checked before slicing; nothing here panics.

use super::{Algorithm, Header, FORMAT_V1, MIN_ENVELOPE_LEN, NONCE_LEN, TAG_LEN, TEXT_PREFIX};
use crate::ids::{KeyVersion, Purpose};
use crate::{Error, Result};

/// A parsed envelope borrowing the input: header, the header's bytes (for the AAD),
/// and the ciphertext ‖ tag.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The parsed header.
    pub header: Header,
    /// The exact header bytes, authenticated as part of the AAD.
    pub header_bytes: &'a [u8],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext_and_tag: &'a [u8],
}

/// Parses a binary envelope. Any structural problem is [`Error::InvalidEnvelope`].
pub fn parse(bytes: &[u8]) -> Result<Envelope<'_>> {
    if bytes.len() < MIN_ENVELOPE_LEN {
        return Err(Error::InvalidEnvelope);
    }
    let (&version, rest) = bytes.split_first().ok_or(Error::InvalidEnvelope)?;
    if version != FORMAT_V1 {
        return Err(Error::InvalidEnvelope);
    }
    let (&alg, rest) = rest.split_first().ok_or(Error::InvalidEnvelope)?;
    let algorithm = Algorithm::from_id(alg).ok_or(Error::InvalidEnvelope)?;
    let (&plen, rest) = rest.split_first().ok_or(Error::InvalidEnvelope)?;
    let plen = usize::from(plen);
    let (purpose_bytes, rest) = split(rest, plen)?;
    Purpose::validate(purpose_bytes).map_err(|_| Error::InvalidEnvelope)?;
    let purpose = std::str::from_utf8(purpose_bytes)
        .ok()
        .and_then(|s| Purpose::new(s).ok())
        .ok_or(Error::InvalidEnvelope)?;
    let (ver, rest) = split(rest, 4)?;
    let ver = u32::from_be_bytes(ver.try_into().map_err(|_| Error::InvalidEnvelope)?);
    let key_version = KeyVersion::new(ver).map_err(|_| Error::InvalidEnvelope)?;
    let (nonce, ciphertext_and_tag) = split(rest, NONCE_LEN)?;
    // At least the payload-kind byte and a full tag.
    if ciphertext_and_tag.len() < 1 + TAG_LEN {
        return Err(Error::InvalidEnvelope);
    }
    let header_len = bytes.len() - ciphertext_and_tag.len();
    let header_bytes = bytes.get(..header_len).ok_or(Error::InvalidEnvelope)?;
    Ok(Envelope {
        header: Header {
            algorithm,
            purpose,
            key_version,
            nonce: nonce.try_into().map_err(|_| Error::InvalidEnvelope)?,
        },
        header_bytes,
        ciphertext_and_tag,
    })
}

/// Decodes the text form (`kf1:` + URL-safe base64, no padding, no whitespace) into
/// the binary form.
pub fn from_text(text: &str) -> Result<Vec<u8>> {
    let b64 = text
        .strip_prefix(TEXT_PREFIX)
        .ok_or(Error::InvalidEnvelope)?;
    base64_simd::URL_SAFE_NO_PAD
        .decode_to_vec(b64)
        .map_err(|_| Error::InvalidEnvelope)
}

/// Like [`from_text`], decoding into `out` (cleared first) so a caller decoding many
/// envelopes can reuse one buffer.
pub fn from_text_into(text: &str, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let b64 = text
        .strip_prefix(TEXT_PREFIX)
        .ok_or(Error::InvalidEnvelope)?;
    base64_simd::URL_SAFE_NO_PAD
        .decode_append(b64, out)
        .map_err(|_| Error::InvalidEnvelope)
}

/// True when `text` has the text form's prefix (a cheap "is this already encrypted?").
pub fn looks_like_text_envelope(text: &str) -> bool {
    text.starts_with(TEXT_PREFIX)
}

fn split(b: &[u8], n: usize) -> Result<(&[u8], &[u8])> {
    if b.len() < n {
        Err(Error::InvalidEnvelope)
    } else {
        Ok(b.split_at(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::write::{encode_header, to_text};
    use proptest::prelude::*;

    fn header(purpose: &str, v: u32, alg: Algorithm) -> Header {
        Header {
            algorithm: alg,
            purpose: Purpose::new(purpose).unwrap(),
            key_version: KeyVersion::new(v).unwrap(),
            nonce: [7; NONCE_LEN],
        }
    }

    proptest! {
        #[test]
        fn header_round_trip(purpose in "[a-zA-Z][a-zA-Z0-9_.-]{0,63}", v in 1u32.., det: bool,
                             body in proptest::collection::vec(any::<u8>(), 17..200)) {
            let alg = if det { Algorithm::Aes256GcmSivDeterministic } else { Algorithm::Aes256Gcm };
            let h = header(&purpose, v, alg);
            let mut bin = Vec::new();
            encode_header(&h, &mut bin);
            prop_assert_eq!(bin.len(), h.encoded_len());
            bin.extend_from_slice(&body);
            let text = to_text(&bin);
            let back = from_text(&text).unwrap();
            prop_assert_eq!(&back, &bin);
            let env = parse(&back).unwrap();
            prop_assert_eq!(env.header, h);
            prop_assert_eq!(env.ciphertext_and_tag, &body[..]);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn refuses_structural_errors() {
        let h = header("userData", 1, Algorithm::Aes256Gcm);
        let mut good = Vec::new();
        encode_header(&h, &mut good);
        good.extend_from_slice(&[0u8; 17]);
        assert!(parse(&good).is_ok());

        let mut bad_version = good.clone();
        bad_version[0] = 2;
        assert_eq!(parse(&bad_version).err(), Some(Error::InvalidEnvelope));
        let mut bad_alg = good.clone();
        bad_alg[1] = 9;
        assert!(parse(&bad_alg).is_err());
        let mut bad_len = good.clone();
        bad_len[2] = 200;
        assert!(parse(&bad_len).is_err());
        let mut zero_version = good.clone();
        zero_version[3 + 8..3 + 12].copy_from_slice(&[0, 0, 0, 0]);
        assert!(parse(&zero_version).is_err());
        assert!(parse(&good[..good.len() - 1]).is_err());
        assert!(from_text("kf2:AAAA").is_err());
        assert!(from_text("kf1:AA==").is_err());
        assert!(from_text("kf1:A A").is_err());
    }

    /// One binary envelope has exactly one text form: standard-alphabet characters,
    /// padding, a dangling character and non-zero trailing bits are all refused.
    #[test]
    fn text_form_is_canonical() {
        let mut out = Vec::new();
        assert_eq!(from_text("kf1:AQI").unwrap(), [1, 2]);
        assert!(from_text_into("kf1:AQI", &mut out).is_ok());
        assert_eq!(out, [1, 2]);
        for bad in [
            "kf1:AQJ",
            "kf1:AR",
            "kf1:AQI=",
            "kf1:A",
            "kf1:+/+/",
            "kf1:AQI\n",
        ] {
            assert!(from_text(bad).is_err(), "{bad}");
            assert!(from_text_into(bad, &mut out).is_err(), "{bad}");
        }
        assert_eq!(from_text("kf1:-_-_").unwrap(), [0xfb, 0xff, 0xbf]);
    }
}
