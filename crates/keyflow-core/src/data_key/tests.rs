//! Unit tests of [`super::DataKey`], [`super::Plaintext`] and [`super::FileKey`].

use super::*;
use crate::envelope::read::parse;
use crate::rng::OsRng;
use proptest::prelude::*;

fn key(purpose: &str, v: u32, byte: u8) -> DataKey {
    DataKey::derive(
        Purpose::new(purpose).unwrap(),
        KeyVersion::new(v).unwrap(),
        &SecretKey::from_slice(&[byte; 32]).unwrap(),
    )
    .unwrap()
}

proptest! {
    #[test]
    fn randomized_round_trip(data in proptest::collection::vec(any::<u8>(), 0..600), k in "[a-z]{1,8}", v in "[a-z0-9]{0,8}") {
        let dk = key("userData", 3, 1);
        let ctx = Context::from_pairs([(k, v)]).unwrap();
        let env = dk.encrypt(PayloadKind::Bytes, &data, &ctx, &OsRng).unwrap();
        let parsed = parse(&env).unwrap();
        let pt = dk.decrypt(&parsed, &ctx).unwrap();
        prop_assert_eq!(pt.as_bytes(), &data[..]);
        prop_assert_eq!(pt.kind(), PayloadKind::Bytes);
    }

    #[test]
    fn deterministic_round_trip(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dk = key("userData", 1, 2);
        let ctx = Context::from_pairs([("field", "email")]).unwrap();
        let a = dk.encrypt_deterministic(PayloadKind::Text, &data, &ctx).unwrap();
        let b = dk.encrypt_deterministic(PayloadKind::Text, &data, &ctx).unwrap();
        prop_assert_eq!(&a, &b);
        let pt = dk.decrypt(&parse(&a).unwrap(), &ctx).unwrap();
        prop_assert_eq!(pt.as_bytes(), &data[..]);
    }
}

#[test]
fn batch_encryption_round_trips_with_distinct_nonces() {
    let dk = key("userData", 1, 11);
    let ctx = Context::from_pairs([("k", "v")]).unwrap();
    let items: Vec<(PayloadKind, &[u8])> = vec![
        (PayloadKind::Text, b"a"),
        (PayloadKind::Json, b"1"),
        (PayloadKind::Bytes, b""),
    ];
    let out = dk.encrypt_batch(&items, &ctx, &OsRng);
    let mut nonces = std::collections::HashSet::new();
    for ((kind, data), env) in items.iter().zip(out) {
        let env = env.unwrap();
        let parsed = parse(&env).unwrap();
        assert!(nonces.insert(parsed.header.nonce));
        let pt = dk.decrypt(&parsed, &ctx).unwrap();
        assert_eq!((pt.kind(), pt.as_bytes()), (*kind, *data));
    }
}

#[test]
fn a_failing_item_is_reported_in_place_and_not_counted() {
    let dk = key("userData", 1, 12);
    let ctx = Context::new();
    let oversize = vec![0u8; MAX_PLAINTEXT_LEN + 1];
    let items = [
        (PayloadKind::Text, &b"first"[..]),
        (PayloadKind::Bytes, &oversize[..]),
        (PayloadKind::Text, &b"third"[..]),
    ];
    let mut seen = Vec::new();
    let sealed = dk.encrypt_each(items, &ctx, &OsRng, |r| {
        seen.push(r.map(|env| dk.decrypt(&parse(env).unwrap(), &ctx).unwrap()));
    });
    assert_eq!(sealed, 2);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].as_ref().unwrap().as_bytes(), b"first");
    assert!(matches!(seen[1], Err(Error::Invalid(_))));
    assert_eq!(seen[2].as_ref().unwrap().as_bytes(), b"third");
}

/// Counts `fill` calls; fails them all when `broken`.
struct CountingRng {
    fills: std::sync::atomic::AtomicUsize,
    broken: bool,
}

impl SecureRandom for CountingRng {
    fn fill(&self, dest: &mut [u8]) -> Result<()> {
        self.fills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.broken {
            return Err(Error::Randomness);
        }
        OsRng.fill(dest)
    }
}

#[test]
fn batch_nonces_are_fetched_in_chunks_and_never_repeat() {
    let dk = key("userData", 1, 13);
    let ctx = Context::new();
    let rng = CountingRng {
        fills: 0.into(),
        broken: false,
    };
    let items = vec![(PayloadKind::Text, &b"x"[..]); 150];
    let mut nonces = std::collections::HashSet::new();
    let sealed = dk.encrypt_each(items.iter().copied(), &ctx, &rng, |r| {
        assert!(nonces.insert(parse(r.unwrap()).unwrap().header.nonce));
    });
    assert_eq!((sealed, nonces.len()), (150, 150));
    assert_eq!(rng.fills.into_inner(), 3, "64 + 64 + 22 items");

    // Without randomness nothing is sealed, and every item says why.
    let rng = CountingRng {
        fills: 0.into(),
        broken: true,
    };
    let mut errors = 0;
    let sealed = dk.encrypt_each(items.iter().copied().take(3), &ctx, &rng, |r| {
        assert!(matches!(r, Err(Error::Randomness)));
        errors += 1;
    });
    assert_eq!((sealed, errors), (0, 3));
}

#[test]
fn randomized_is_randomized_and_context_bound() {
    let dk = key("userData", 1, 3);
    let ctx = Context::from_pairs([("recordId", "r-1")]).unwrap();
    let a = dk
        .encrypt(PayloadKind::Text, b"4532", &ctx, &OsRng)
        .unwrap();
    let b = dk
        .encrypt(PayloadKind::Text, b"4532", &ctx, &OsRng)
        .unwrap();
    assert_ne!(a, b);
    let other = Context::from_pairs([("recordId", "r-2")]).unwrap();
    let env = parse(&a).unwrap();
    assert_eq!(
        dk.decrypt(&env, &other).err(),
        Some(Error::DecryptionFailed)
    );
    assert_eq!(
        dk.decrypt(&env, &Context::new()).err(),
        Some(Error::DecryptionFailed)
    );
    assert!(dk.decrypt(&env, &ctx).is_ok());
}

#[test]
fn deterministic_differs_across_contexts_and_values() {
    let dk = key("userData", 1, 4);
    let c1 = Context::from_pairs([("field", "email")]).unwrap();
    let c2 = Context::from_pairs([("field", "phone")]).unwrap();
    let a = dk
        .encrypt_deterministic(PayloadKind::Text, b"x@y.z", &c1)
        .unwrap();
    let b = dk
        .encrypt_deterministic(PayloadKind::Text, b"x@y.z", &c2)
        .unwrap();
    let c = dk
        .encrypt_deterministic(PayloadKind::Text, b"x@y.zz", &c1)
        .unwrap();
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert!(dk.decrypt(&parse(&a).unwrap(), &c2).is_err());
    // Another DEK gives another ciphertext for the same input.
    let other = key("userData", 1, 5);
    assert_ne!(
        a,
        other
            .encrypt_deterministic(PayloadKind::Text, b"x@y.z", &c1)
            .unwrap()
    );
}

#[test]
fn wrong_key_purpose_or_version_refused() {
    let dk = key("userData", 1, 6);
    let env = dk
        .encrypt(PayloadKind::Bytes, b"secret", &Context::new(), &OsRng)
        .unwrap();
    let parsed = parse(&env).unwrap();
    assert!(key("userData", 1, 7)
        .decrypt(&parsed, &Context::new())
        .is_err());
    assert!(key("userData", 2, 6)
        .decrypt(&parsed, &Context::new())
        .is_err());
    assert!(key("other", 1, 6)
        .decrypt(&parsed, &Context::new())
        .is_err());
}

#[test]
fn every_flipped_bit_is_detected() {
    let dk = key("userData", 1, 8);
    let env = dk
        .encrypt(PayloadKind::Text, b"123-45-6789", &Context::new(), &OsRng)
        .unwrap();
    for i in 0..env.len() {
        for bit in 0..8 {
            let mut t = env.clone();
            t[i] ^= 1 << bit;
            let ok = parse(&t)
                .ok()
                .map(|p| dk.decrypt(&p, &Context::new()).is_ok())
                .unwrap_or(false);
            assert!(!ok, "flip of byte {i} bit {bit} accepted");
        }
    }
}

#[test]
fn blind_index_truncation_and_separation() {
    let dk = key("userData", 1, 9);
    let a = dk.blind_index("email", b"a@b.c", 32).unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a, dk.blind_index("email", b"a@b.c", 32).unwrap());
    assert_ne!(a, dk.blind_index("phone", b"a@b.c", 32).unwrap());
    let odd = dk.blind_index("email", b"a@b.c", 12).unwrap();
    assert_eq!(odd.len(), 2);
    assert_eq!(odd[1] & 0x0F, 0);
    assert_eq!(odd[0], a[0]);
    assert!(dk.blind_index("email", b"x", 7).is_err());
    assert!(dk.blind_index("email", b"x", 257).is_err());
    // Another DEK version gives another index (search must try every live version).
    assert_ne!(
        key("userData", 2, 10)
            .blind_index("email", b"a@b.c", 32)
            .unwrap(),
        a
    );
}

#[test]
fn plaintext_moves_out_without_copies() {
    let dk = key("userData", 1, 12);
    let env = dk
        .encrypt(PayloadKind::Text, "zoë".as_bytes(), &Context::new(), &OsRng)
        .unwrap();
    let pt = dk.decrypt(&parse(&env).unwrap(), &Context::new()).unwrap();
    assert_eq!(pt.into_string().unwrap(), "zoë");
    let env = dk
        .encrypt(PayloadKind::Bytes, &[0xff, 0xfe], &Context::new(), &OsRng)
        .unwrap();
    let pt = dk.decrypt(&parse(&env).unwrap(), &Context::new()).unwrap();
    assert_eq!(&pt.into_bytes()[..], &[0xff, 0xfe]);
    let pt = dk.decrypt(&parse(&env).unwrap(), &Context::new()).unwrap();
    assert_eq!(pt.into_string(), Err(Error::DecryptionFailed), "not UTF-8");
}

#[test]
fn file_keys_depend_on_salt_and_dek_and_round_trip() {
    let dk = key("documents", 1, 13);
    let (s1, s2) = ([1u8; FILE_SALT_LEN], [2u8; FILE_SALT_LEN]);
    let nonce = [7u8; NONCE_LEN];
    let mut buf = *b"segment";
    let tag = dk
        .file_key(&s1)
        .unwrap()
        .seal_in_place(nonce, b"h", &mut buf)
        .unwrap();
    let mut ct = buf.to_vec();
    ct.extend_from_slice(&tag);
    let open = |k: &FileKey, aad: &[u8]| {
        k.open_in_place(nonce, aad, &mut ct.clone())
            .map(|p| p.to_vec())
    };
    assert_eq!(open(&dk.file_key(&s1).unwrap(), b"h").unwrap(), b"segment");
    assert_eq!(
        open(&dk.file_key(&s1).unwrap(), b"x"),
        Err(Error::DecryptionFailed)
    );
    assert!(open(&dk.file_key(&s2).unwrap(), b"h").is_err());
    assert!(open(&key("documents", 1, 14).file_key(&s1).unwrap(), b"h").is_err());
    // Debug shows no key material.
    assert_eq!(format!("{:?}", dk.file_key(&s1).unwrap()), "FileKey(..)");
}

#[test]
fn file_key_out_of_place_matches_in_place_and_wipes_on_failure() {
    let dk = key("documents", 1, 15);
    let fk = dk.file_key(&[3u8; FILE_SALT_LEN]).unwrap();
    let nonce = [5u8; NONCE_LEN];
    for len in [0usize, 1, 15, 16, 17, 1000] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
        let mut in_place = plain.clone();
        let tag = fk.seal_in_place(nonce, b"aad", &mut in_place).unwrap();
        let mut ct = vec![0u8; len];
        let tag2 = fk
            .seal_out_of_place(nonce, b"aad", &plain, &mut ct)
            .unwrap();
        assert_eq!((&ct, tag2), (&in_place, tag), "len {len}");
        let mut out = vec![0xEEu8; len];
        fk.open_out_of_place(nonce, b"aad", &ct, &tag, &mut out)
            .unwrap();
        assert_eq!(out, plain);
        // Failure: wrong AAD, tampered tag, tampered ciphertext — output wiped.
        let mut bad_tag = tag;
        bad_tag[0] ^= 1;
        let mut bad_ct = ct.clone();
        if let Some(b) = bad_ct.first_mut() {
            *b ^= 0x80;
        }
        for (aad, c, t) in [
            (&b"aaX"[..], &ct, &tag),
            (&b"aad"[..], &ct, &bad_tag),
            (&b"aad"[..], &bad_ct, &tag),
        ] {
            if len == 0 && c == &bad_ct && t == &tag && aad == b"aad" {
                continue; // nothing to tamper with
            }
            let mut out = vec![0xEEu8; len];
            assert_eq!(
                fk.open_out_of_place(nonce, aad, c, t, &mut out),
                Err(Error::DecryptionFailed)
            );
            assert!(out.iter().all(|&b| b == 0), "len {len}: not wiped");
        }
    }
    // Length mismatches are refused; a failed open still wipes.
    let mut short = [0u8; 3];
    assert_eq!(
        fk.seal_out_of_place(nonce, b"", b"four", &mut short),
        Err(Error::Crypto)
    );
    let mut out = [0xEEu8; 3];
    assert_eq!(
        fk.open_out_of_place(nonce, b"", b"four", &[0; TAG_LEN], &mut out),
        Err(Error::DecryptionFailed)
    );
    assert_eq!(out, [0; 3]);
}

#[test]
fn filled_encryption_is_the_same_envelope_as_from_bytes() {
    let k = key("userData", 3, 7);
    let ctx = Context::from_pairs([("recordId", "r-1")]).unwrap();
    let data = b"bytes written in place";
    let fill = |o: &mut Vec<u8>| {
        o.extend_from_slice(data);
        Ok(())
    };
    // Randomized: appended after what `out` held, and it decrypts.
    let mut out = b"prefix".to_vec();
    k.encrypt_filled_into(
        NonceMode::Random(&OsRng),
        PayloadKind::Bytes,
        data.len(),
        fill,
        &ctx,
        &mut out,
    )
    .unwrap();
    assert_eq!(&out[..6], b"prefix");
    let pt = k.decrypt(&parse(&out[6..]).unwrap(), &ctx).unwrap();
    assert_eq!((pt.kind(), pt.as_bytes()), (PayloadKind::Bytes, &data[..]));
    // Deterministic: exactly the envelope `encrypt_deterministic` makes.
    let mut det = Vec::new();
    k.encrypt_filled_into(
        NonceMode::Deterministic,
        PayloadKind::Bytes,
        data.len(),
        fill,
        &ctx,
        &mut det,
    )
    .unwrap();
    let want = k
        .encrypt_deterministic(PayloadKind::Bytes, data, &ctx)
        .unwrap();
    assert_eq!(det, want);
}

#[test]
fn a_failed_or_short_fill_leaves_the_buffer_as_it_was() {
    let k = key("userData", 1, 9);
    let ctx = Context::new();
    let mut out = b"kept".to_vec();
    let failing = |o: &mut Vec<u8>| {
        o.extend_from_slice(b"half");
        Err(Error::Invalid("base64 data"))
    };
    assert_eq!(
        k.encrypt_filled_into(
            NonceMode::Random(&OsRng),
            PayloadKind::Bytes,
            8,
            failing,
            &ctx,
            &mut out
        ),
        Err(Error::Invalid("base64 data"))
    );
    assert_eq!(out, b"kept");
    for written in [7usize, 9] {
        let wrong = |o: &mut Vec<u8>| {
            o.extend(std::iter::repeat_n(1u8, written));
            Ok(())
        };
        let r = k.encrypt_filled_into(
            NonceMode::Deterministic,
            PayloadKind::Bytes,
            8,
            wrong,
            &ctx,
            &mut out,
        );
        assert!(matches!(r, Err(Error::Invalid(_))), "{written}: {r:?}");
        assert_eq!(out, b"kept");
    }
    // The size limit holds before anything is written.
    let never = |_: &mut Vec<u8>| -> Result<()> { panic!("fill must not run") };
    let r = k.encrypt_filled_into(
        NonceMode::Random(&OsRng),
        PayloadKind::Bytes,
        MAX_PLAINTEXT_LEN + 1,
        never,
        &ctx,
        &mut out,
    );
    assert!(matches!(r, Err(Error::Invalid(_))));
    assert_eq!(out, b"kept");
}

#[test]
fn debug_shows_no_key_material() {
    let dk = key("userData", 1, 0xAB);
    let s = format!("{dk:?}");
    assert_eq!(
        s,
        "DataKey { purpose: Purpose(userData), version: KeyVersion(1), .. }"
    );
}
