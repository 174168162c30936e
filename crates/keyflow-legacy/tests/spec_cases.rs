//! Cases made from the specification (`FORMAT.md`), beyond the generated vectors: keys
//! that must be refused (wrong length, unknown status, wrong KEK, no material,
//! duplicates with other material, slots KeyFlow already uses), tampered and
//! short-tagged packages, backup checksum mismatch, the lifecycle applied to legacy
//! versions (revoke stops them decrypting; destroy is never undone by a re-import),
//! and secrets kept out of `Debug` and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{
    Context, Decrypted, EncryptionService, KeyStatus, KeyVersion, Purpose, ServiceConfig,
    VersionFilter,
};
use keyflow_legacy::import::{import, Census, Outcome};
use keyflow_legacy::keys::{parse_key_documents, Entries};
use keyflow_legacy::{backup, convert, envelope, write, LegacyError, LegacyKek, LegacyKeyring};
use keyflow_testkit::Env;
use serde_json::json;

const KEK: [u8; 32] = [0x11; 32];
const DEK_A1: [u8; 32] = [0xA1; 32];
const DEK_A2: [u8; 32] = [0xA2; 32];

fn kek() -> LegacyKek {
    LegacyKek::from_bytes(&KEK).unwrap()
}

fn doc(id: &str, purpose: &str, version: u32, status: &str, dek: &[u8]) -> String {
    write::key_document(
        id,
        purpose,
        version,
        status,
        &write::wrap_key(&kek(), dek, &OsRng).unwrap(),
    )
}

fn entries(lines: &[String]) -> Entries {
    parse_key_documents(&lines.join("\n"), "keys")
}

async fn service() -> (Env, EncryptionService) {
    let env = Env::new();
    let svc = env.service(ServiceConfig::default()).await;
    (env, svc)
}

fn reason<'a>(c: &'a Census, id: &str) -> &'a str {
    let k = c
        .keys
        .iter()
        .find(|k| k.key_id == id)
        .unwrap_or_else(|| panic!("{id} not in {c:?}"));
    assert_eq!(k.outcome, Outcome::Unreadable, "{k:?}");
    k.reason.as_deref().unwrap()
}

#[tokio::test]
async fn bad_keys_are_refused_one_by_one_and_the_good_ones_imported() {
    let (_env, svc) = service().await;
    let other_kek = LegacyKek::from_bytes(&[0x22; 32]).unwrap();
    let foreign = write::key_document(
        "x-1",
        "x",
        1,
        "active",
        &write::wrap_key(&other_kek, &DEK_A1, &OsRng).unwrap(),
    );
    let no_material =
        doc("s-1", "s", 1, "active", &DEK_A1).replace(r#""encryptedKey":"#, r#""encryptedKey0":"#);
    let input = entries(&[
        doc("a-1", "a", 1, "rotating", &DEK_A1),
        doc("a-2", "a", 2, "active", &[0xA2; 16]),
        doc("q-1", "q", 1, "expired", &DEK_A1),
        foreign,
        no_material,
    ]);
    let c = import(&svc, &kek(), vec![input], false).await.unwrap();
    assert_eq!((c.found, c.imported, c.unreadable), (5, 1, 4), "{c:?}");
    assert!(reason(&c, "a-2").contains("unwrapped key of 16 bytes refused"));
    assert!(reason(&c, "q-1").contains("not one of active, rotating, deprecated, revoked"));
    assert!(reason(&c, "x-1").contains("does not unwrap with this KEK file"));
    assert!(reason(&c, "s-1").contains("no key material"));
    // Only a1 and a fresh active version above every listed legacy version of `a`.
    let versions = svc.keys().list(&VersionFilter::default()).await.unwrap();
    let got: Vec<_> = versions
        .iter()
        .map(|v| (v.purpose.as_str().to_owned(), v.version.get(), v.status))
        .collect();
    assert_eq!(
        got,
        [
            ("a".to_owned(), 1, KeyStatus::Rotating),
            ("a".to_owned(), 3, KeyStatus::Active)
        ]
    );
    assert_eq!(c.new_active.len(), 1);
    // The census never holds key material.
    let shown = format!("{c:?}{}", serde_json::to_string(&c).unwrap());
    assert!(!shown.contains("oaGh") && !shown.contains("161"), "{shown}");
}

#[tokio::test]
async fn duplicates_with_other_material_are_refused_and_nothing_of_them_written() {
    let (_env, svc) = service().await;
    let input = entries(&[
        doc("a-1", "a", 1, "active", &DEK_A1),
        doc("a-1-copy", "a", 1, "active", &DEK_A2),
        doc("b-1", "b", 1, "active", &DEK_A1),
        doc("b-1-alias", "b", 1, "active", &DEK_A1),
        doc("c-1", "c", 1, "active", &DEK_A1),
        doc("c-1", "c", 2, "active", &DEK_A1),
    ]);
    let c = import(&svc, &kek(), vec![input], false).await.unwrap();
    assert!(reason(&c, "a-1").contains("duplicate (a, version 1) with other key material"));
    assert!(reason(&c, "a-1-copy").contains("duplicate"));
    assert!(reason(&c, "c-1").contains("listed more than once"));
    assert_eq!(
        c.imported, 2,
        "b-1 and its alias: same material, one version"
    );
    let versions = svc.keys().list(&VersionFilter::default()).await.unwrap();
    assert!(
        versions.iter().all(|v| v.purpose.as_str() == "b"),
        "{versions:?}"
    );
    let legacy = svc.keys().legacy_keys().await.unwrap();
    assert_eq!(legacy.len(), 2);
    assert!(legacy.iter().all(|k| k.version == KeyVersion::FIRST));

    // Same (purpose, version) arriving later with other material: refused, not replaced.
    let later = import(
        &svc,
        &kek(),
        vec![entries(&[doc("b-1-new", "b", 1, "active", &DEK_A2)])],
        false,
    )
    .await
    .unwrap();
    assert!(reason(&later, "b-1-new").contains("already holds other key material"));
    // The same key again imports nothing.
    let again = import(
        &svc,
        &kek(),
        vec![entries(&[doc("b-1", "b", 1, "active", &DEK_A1)])],
        false,
    )
    .await
    .unwrap();
    assert_eq!((again.imported, again.already_present), (0, 1));
}

#[tokio::test]
async fn slots_keyflow_already_uses_are_refused() {
    let (_env, svc) = service().await;
    let p = Purpose::new("a").unwrap();
    svc.keys().generate(&p).await.unwrap();
    let c = import(
        &svc,
        &kek(),
        vec![entries(&[
            doc("a-1", "a", 1, "rotating", &DEK_A1),
            doc("a-2", "a", 2, "active", &DEK_A2),
        ])],
        false,
    )
    .await
    .unwrap();
    assert!(reason(&c, "a-1").contains("is a KeyFlow key"));
    assert!(reason(&c, "a-2").contains("above KeyFlow's active version 1"));
    assert_eq!(
        svc.keys()
            .list(&VersionFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(svc.keys().legacy_keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn dry_run_writes_nothing_and_states_map_to_decrypt_only() {
    let (_env, svc) = service().await;
    let input = || {
        entries(&[
            doc("a-1", "a", 1, "active", &DEK_A1),
            doc("a-2", "a", 2, "deprecated", &DEK_A2),
            doc("a-3", "a", 3, "revoked", &[0xA3; 32]),
        ])
    };
    let dry = import(&svc, &kek(), vec![input()], true).await.unwrap();
    assert_eq!((dry.imported, dry.dry_run), (3, true));
    assert!(svc
        .keys()
        .list(&VersionFilter::default())
        .await
        .unwrap()
        .is_empty());
    import(&svc, &kek(), vec![input()], false).await.unwrap();
    let states: Vec<_> = svc
        .keys()
        .list(&VersionFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|v| v.status)
        .collect();
    assert_eq!(
        states,
        [
            KeyStatus::Rotating,
            KeyStatus::Deprecated,
            KeyStatus::Revoked,
            KeyStatus::Active
        ]
    );
}

#[tokio::test]
async fn packages_tampered_short_tagged_or_under_unknown_keys_fail_alone() {
    let (_env, svc) = service().await;
    import(
        &svc,
        &kek(),
        vec![entries(&[doc("a-1", "a", 1, "active", &DEK_A1)])],
        false,
    )
    .await
    .unwrap();
    let ring = LegacyKeyring::load(&svc).await.unwrap();
    let ctx = Context::new();
    let good = write::package(&DEK_A1, "a-1", 1, b"{\"n\":5}", Some("order-7"), &OsRng).unwrap();
    let ct = convert::convert_package(&svc, &ring, &good, &ctx)
        .await
        .unwrap();
    assert!(
        matches!(svc.decrypt(&ct, &ctx).await.unwrap(), Decrypted::Json(v) if v == json!({"n": 5}))
    );

    let mut pkg: serde_json::Value = serde_json::from_slice(&base64_decode(&good)).unwrap();
    let reencode = |v: &serde_json::Value| base64_encode(v.to_string().as_bytes());
    // A flipped ciphertext bit, another AAD, a truncated tag, an unknown key, a wrong version.
    let mut t = pkg.clone();
    let mut ct_bytes = base64_decode(t["ciphertext"].as_str().unwrap());
    ct_bytes[0] ^= 1;
    t["ciphertext"] = json!(base64_encode(&ct_bytes));
    let err = |p: serde_json::Value| {
        let (svc, ring, ctx) = (&svc, &ring, &ctx);
        async move {
            convert::convert_package(svc, ring, &reencode(&p), ctx)
                .await
                .unwrap_err()
        }
    };
    assert!(matches!(err(t).await, LegacyError::DecryptionFailed));
    let mut t = pkg.clone();
    t["aad"] = json!("order-8");
    assert!(matches!(err(t).await, LegacyError::DecryptionFailed));
    let mut t = pkg.clone();
    let tag = base64_decode(t["authTag"].as_str().unwrap());
    t["authTag"] = json!(base64_encode(&tag[..4]));
    assert!(matches!(err(t).await, LegacyError::TagLength(4)));
    let mut t = pkg.clone();
    t["keyId"] = json!("a-9");
    assert!(matches!(err(t).await, LegacyError::UnknownKey(_)));
    pkg["keyVersion"] = json!(2);
    assert!(matches!(
        err(pkg).await,
        LegacyError::VersionMismatch {
            found: 2,
            expected: 1,
            ..
        }
    ));
}

#[tokio::test]
async fn revoke_stops_legacy_reads_and_destroy_is_never_undone_by_a_reimport() {
    let (_env, svc) = service().await;
    let input = || entries(&[doc("a-1", "a", 1, "active", &DEK_A1)]);
    import(&svc, &kek(), vec![input()], false).await.unwrap();
    let p = Purpose::new("a").unwrap();
    svc.keys()
        .revoke(&p, KeyVersion::FIRST, "legacy data converted")
        .await
        .unwrap();
    let ring = LegacyKeyring::load(&svc).await.unwrap();
    let pkg = write::package(&DEK_A1, "a-1", 1, b"x", None, &OsRng).unwrap();
    let e = convert::convert_package(&svc, &ring, &pkg, &Context::new())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "legacy key a-1 is revoked in KeyFlow and may not decrypt"
    );
    svc.keys().destroy(&p, KeyVersion::FIRST).await.unwrap();
    let again = import(&svc, &kek(), vec![input()], false).await.unwrap();
    assert_eq!((again.imported, again.already_present), (0, 1));
    assert!(again.keys[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("destroyed"));
    let v = svc.keys().list(&VersionFilter::default()).await.unwrap();
    assert_eq!(v[0].status, KeyStatus::Destroyed);
}

#[test]
fn backup_checksum_mismatch_and_wrong_password_fail_the_whole_backup() {
    let key = json!({"keyId": "a-1", "version": 1, "algorithm": "aes-256-gcm", "encryptedKey": "AAAA",
                     "purpose": "a", "status": "active"});
    let good = write::backup_v2(&[key]);
    let sealed = write::password_envelope(good.as_bytes(), b"backup-pw", 1_000, &OsRng).unwrap();
    assert_eq!(
        backup::open(&sealed, b"backup-pw", &[1_000])
            .unwrap()
            .entries
            .keys
            .len(),
        1
    );
    let tampered = good.replace("\"a-1\"", "\"a-2\"");
    let sealed =
        write::password_envelope(tampered.as_bytes(), b"backup-pw", 1_000, &OsRng).unwrap();
    assert!(matches!(
        backup::open(&sealed, b"backup-pw", &[1_000]),
        Err(LegacyError::ChecksumMismatch)
    ));
    let e = backup::open(&sealed, b"wrong", &envelope::counts(Some(1_000))).unwrap_err();
    assert!(matches!(
        e,
        LegacyError::WrongPassword { what: "backup", .. }
    ));
}

#[test]
fn debug_output_shows_no_key_material() {
    let k = kek();
    assert!(!format!("{k:?}").contains("17"));
    let e = entries(&[doc("a-1", "a", 1, "active", &DEK_A1)]);
    let shown = format!("{e:?}");
    assert!(
        shown.contains("a-1") && !shown.contains("encrypted_key"),
        "{shown}"
    );
    let pkg = keyflow_legacy::Package::parse(
        &write::package(&DEK_A1, "a-1", 1, b"secret", None, &OsRng).unwrap(),
    )
    .unwrap();
    assert!(!format!("{pkg:?}").contains("ciphertext"));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
