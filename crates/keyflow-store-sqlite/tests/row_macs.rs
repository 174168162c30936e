//! Row MACs on SQLite, attacked through SQL as someone who can write the database file
//! but does not hold the KEK: a minted admin token, a revoked token or key version
//! brought back, a stretched policy, a wrapped key moved to another row, a reset
//! first-sealing marker — each is refused, counted and reported. Also: rows from before
//! the upgrade are sealed once, a KEK rotation re-seals every row, and a destroy that
//! a reader keeps from erasing the WAL says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use keyflow_kms::keystore::{KekBinding, KeyVersions, Policies, Tokens};
use std::sync::{Arc, Mutex};

use keyflow_kms::access::{self, Role, TokenRecord};
use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome, VersionFilter,
};
use keyflow_kms::row_mac::{RowRefusal, RowSealer};
use keyflow_kms::{KeyVersion, Purpose};
use keyflow_store_sqlite::SqliteKeystore;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

struct Db {
    store: SqliteKeystore,
    raw: SqlitePool,
    sealer: Arc<RowSealer>,
    heard: Arc<Mutex<Vec<RowRefusal>>>,
    dir: tempfile::TempDir,
}

fn p(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

fn v(n: u32) -> KeyVersion {
    KeyVersion::new(n).unwrap()
}

fn rec(purpose: &str, version: u32, status: KeyStatus) -> KeyVersionRecord {
    KeyVersionRecord {
        purpose: p(purpose),
        version: v(version),
        status,
        algorithm: "AES-256".into(),
        wrapped_key: (status != KeyStatus::Destroyed).then(|| vec![version as u8 + 0x40; 60]),
        kek_id: "kek-1".into(),
        created_at: 1,
        status_changed_at: 1,
        encryptions: 0,
        revoked_reason: (status == KeyStatus::Revoked).then(|| "leaked".into()),
    }
}

fn new_sealer() -> Arc<RowSealer> {
    Arc::new(RowSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap())
}

async fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyflow.db");
    let store = SqliteKeystore::open(&path).await.unwrap();
    store.init_meta("kek_id", "kek-1").await.unwrap();
    let sealer = new_sealer();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    sealer.on_refusal(move |r| h.lock().unwrap().push(r.clone()));
    store.install_row_sealer(sealer.clone());
    let raw = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    Db {
        store,
        raw,
        sealer,
        heard,
        dir,
    }
}

impl Db {
    async fn sql(&self, sql: &str) -> u64 {
        sqlx::query(sql)
            .execute(&self.raw)
            .await
            .unwrap()
            .rows_affected()
    }

    fn heard(&self) -> Vec<(String, String, String)> {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.table.to_owned(), r.row.clone(), r.reason.to_owned()))
            .collect()
    }

    /// A ring `userData`: v1 revoked, v2 active.
    async fn ring(&self) {
        self.store
            .insert_versions(&[
                rec("userData", 1, KeyStatus::Revoked),
                rec("userData", 2, KeyStatus::Active),
            ])
            .await
            .unwrap();
    }
}

fn triple(table: &str, row: &str, reason: &str) -> (String, String, String) {
    (table.into(), row.into(), reason.into())
}

#[tokio::test]
async fn a_token_minted_in_the_database_is_refused() {
    let db = db().await;
    let real = access::generate(
        Role::Service,
        vec![p("userData")],
        "svc".into(),
        1,
        None,
        &OsRng,
    )
    .unwrap();
    db.store.insert_token(&real.record).await.unwrap();
    // The attacker knows a secret and stores its SHA-256 as an admin token, with no MAC
    // and with a MAC copied from the real row.
    let forged = access::generate(Role::Admin, vec![], "root".into(), 2, None, &OsRng).unwrap();
    for (id, mac) in [
        ("00000000000000f1", "NULL".to_owned()),
        (
            "00000000000000f2",
            "(SELECT row_mac FROM api_tokens WHERE name = 'svc')".to_owned(),
        ),
    ] {
        let hash: String = forged
            .record
            .secret_hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        db.sql(&format!(
            "INSERT INTO api_tokens (id, secret_hash, role, purposes, name, created_at, row_mac) \
             VALUES ('{id}', X'{hash}', 'admin', '', 'root', 2, {mac})"
        ))
        .await;
    }
    let listed = db.store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 1, "only the real token is trusted");
    assert_eq!(listed[0].id, real.record.id);
    assert_eq!(db.sealer.refused(), 2);
    assert_eq!(
        db.heard(),
        vec![
            triple("api_tokens", "00000000000000f1", "missing"),
            triple("api_tokens", "00000000000000f2", "mismatch"),
        ]
    );
    // A forged row is not laundered by revoking it either.
    assert!(db.store.revoke_token("00000000000000f1", 9).await.is_err());
}

#[tokio::test]
async fn a_revoked_token_cleared_in_the_database_stays_refused() {
    let db = db().await;
    let t = access::generate(Role::Admin, vec![], "ops".into(), 1, None, &OsRng).unwrap();
    db.store.insert_token(&t.record).await.unwrap();
    assert!(db.store.revoke_token(&t.record.id, 5).await.unwrap());
    let revoked: Vec<TokenRecord> = db.store.list_tokens().await.unwrap();
    assert_eq!(
        revoked[0].revoked_at,
        Some(5),
        "a legitimate revoke is re-sealed"
    );
    assert_eq!(db.sql("UPDATE api_tokens SET revoked_at = NULL").await, 1);
    assert!(db.store.list_tokens().await.unwrap().is_empty());
    // Role escalation of a live token is refused the same way.
    let svc = access::generate(Role::Service, vec![p("a")], "svc".into(), 2, None, &OsRng).unwrap();
    db.store.insert_token(&svc.record).await.unwrap();
    assert_eq!(db.store.list_tokens().await.unwrap().len(), 1);
    db.sql("UPDATE api_tokens SET role = 'admin' WHERE name = 'svc'")
        .await;
    assert!(db.store.list_tokens().await.unwrap().is_empty());
    assert_eq!(db.sealer.refused(), 4, "ops in three listings, svc in one");
}

#[tokio::test]
async fn a_revoked_version_flipped_back_is_refused_everywhere() {
    let db = db().await;
    db.ring().await;
    let good = db.store.get_version(&p("userData"), v(1)).await.unwrap();
    assert_eq!(good.unwrap().status, KeyStatus::Revoked);
    db.sql(
        "UPDATE key_versions SET status = 'deprecated', revoked_reason = NULL WHERE version = 1",
    )
    .await;
    let e = db
        .store
        .get_version(&p("userData"), v(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key_versions row userData/1") && e.contains("refused"),
        "{e}"
    );
    // Listings leave the row out (refused and reported), so the rest stays usable.
    let listed = db
        .store
        .list_versions(&VersionFilter::default())
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.version.get()).collect::<Vec<_>>(),
        [2]
    );
    // Nor can a lifecycle change seal the forged state.
    let change = StatusChange {
        purpose: p("userData"),
        version: v(1),
        from: vec![KeyStatus::Deprecated],
        to: KeyStatus::Revoked,
        reason: Some("again".into()),
        now: 9,
    };
    assert!(db.store.set_status(&change).await.is_err());
    // The usage counter is not covered: adding to it leaves the row trusted.
    db.store.add_usage(&p("userData"), v(2), 7).await.unwrap();
    let active = db
        .store
        .active_version(&p("userData"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.encryptions, 7);
    assert_eq!(
        db.heard()[0],
        triple("key_versions", "userData/1", "mismatch")
    );
}

#[tokio::test]
async fn material_moved_between_rows_and_stretched_policies_are_refused() {
    let db = db().await;
    db.ring().await;
    // v2's wrapped key copied into v1 (whose state says revoked): the MAC binds them.
    db.sql(
        "UPDATE key_versions SET wrapped_key = (SELECT wrapped_key FROM key_versions WHERE version = 2) \
         WHERE version = 1",
    )
    .await;
    assert!(db.store.get_version(&p("userData"), v(1)).await.is_err());
    assert!(db
        .store
        .get_version(&p("userData"), v(2))
        .await
        .unwrap()
        .is_some());

    let policy = Policy {
        rotation_days: 30,
        ..Policy::default()
    };
    db.store.set_policy(&p("userData"), &policy).await.unwrap();
    assert_eq!(
        db.store.get_policy(&p("userData")).await.unwrap(),
        Some(policy)
    );
    db.sql("UPDATE key_policies SET rotation_days = 3650, max_encryptions = 4294967296")
        .await;
    assert!(db.store.get_policy(&p("userData")).await.is_err());
    assert!(db.store.list_policies().await.is_err());
    // A MAC of the right length but from another KEK is a mismatch too.
    let other = new_sealer();
    db.store.install_row_sealer(other);
    assert!(db.store.get_version(&p("userData"), v(2)).await.is_err());
}

#[tokio::test]
async fn rows_from_before_the_upgrade_are_sealed_once_and_a_reset_marker_is_refused() {
    let db = db().await;
    db.ring().await;
    let t = access::generate(Role::Auditor, vec![], "aud".into(), 1, None, &OsRng).unwrap();
    db.store.insert_token(&t.record).await.unwrap();
    db.store
        .set_policy(&p("userData"), &Policy::default())
        .await
        .unwrap();
    // The state migration 0007 leaves behind on a keystore that had rows.
    for table in ["key_versions", "api_tokens", "key_policies"] {
        db.sql(&format!("UPDATE {table} SET row_mac = NULL")).await;
    }
    db.sql("INSERT INTO keyflow_meta (key, value) VALUES ('row_macs', 'pending')")
        .await;
    assert!(
        db.store.get_version(&p("userData"), v(2)).await.is_err(),
        "unsealed: refused"
    );
    assert_eq!(db.store.seal_legacy_rows().await.unwrap(), 4);
    assert_eq!(
        db.store.get_meta("row_macs").await.unwrap().as_deref(),
        Some("sealed")
    );
    assert_eq!(
        db.store
            .list_versions(&VersionFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(db.store.list_tokens().await.unwrap().len(), 1);
    assert_eq!(db.store.seal_legacy_rows().await.unwrap(), 0, "once");

    // Someone without the KEK puts the marker back and adds an unsealed admin token.
    db.sql("UPDATE keyflow_meta SET value = 'pending' WHERE key = 'row_macs'")
        .await;
    db.sql(
        "INSERT INTO api_tokens (id, secret_hash, role, purposes, name, created_at) \
         VALUES ('00000000000000f3', zeroblob(32), 'admin', '', 'x', 3)",
    )
    .await;
    let e = db.store.seal_legacy_rows().await.unwrap_err().to_string();
    assert!(e.contains("already sealed"), "{e}");
    assert_eq!(
        db.store.list_tokens().await.unwrap().len(),
        1,
        "still refused"
    );
}

#[tokio::test]
async fn a_fresh_keystore_has_nothing_pending() {
    let db = db().await;
    assert_eq!(db.store.get_meta("row_macs").await.unwrap(), None);
    // An unsealed row on a keystore that never had a pending marker is never sealed.
    db.sql(
        "INSERT INTO api_tokens (id, secret_hash, role, purposes, name, created_at) \
         VALUES ('00000000000000f4', zeroblob(32), 'admin', '', 'x', 3)",
    )
    .await;
    assert_eq!(db.store.seal_legacy_rows().await.unwrap(), 0);
    assert!(db.store.list_tokens().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_kek_rotation_reseals_every_row_and_refuses_a_forged_one() {
    let db = db().await;
    db.ring().await;
    let t = access::generate(Role::Admin, vec![], "ops".into(), 1, None, &OsRng).unwrap();
    db.store.insert_token(&t.record).await.unwrap();
    db.store
        .set_policy(&p("userData"), &Policy::default())
        .await
        .unwrap();
    let next = new_sealer();
    let keys = [1, 2].map(|n| RewrappedKey {
        purpose: p("userData"),
        version: v(n),
        wrapped_key: vec![0xEE; 60],
    });
    // A forged row anywhere stops the rotation (it would otherwise be sealed under the
    // new KEK); nothing is written.
    db.sql("UPDATE key_policies SET grace_days = 3000").await;
    assert!(db
        .store
        .rewrap_all("kek_id", "kek-1", "kek-2", &keys, &next)
        .await
        .is_err());
    assert_eq!(
        db.store.get_meta("kek_id").await.unwrap().as_deref(),
        Some("kek-1")
    );
    db.sql("UPDATE key_policies SET grace_days = 30").await;
    assert_eq!(
        db.store
            .rewrap_all("kek_id", "kek-1", "kek-2", &keys, &next)
            .await
            .unwrap(),
        keyflow_kms::WriteOutcome::Applied
    );
    // Under the old KEK's key every row now fails; under the new one all verify.
    assert!(db.store.get_version(&p("userData"), v(2)).await.is_err());
    assert!(db.store.list_tokens().await.unwrap().is_empty());
    db.store.install_row_sealer(next);
    assert_eq!(
        db.store
            .list_versions(&VersionFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(db.store.list_tokens().await.unwrap().len(), 1);
    assert!(db.store.get_policy(&p("userData")).await.unwrap().is_some());
}

#[tokio::test]
async fn destroy_reports_a_wal_checkpoint_a_reader_blocked() {
    let db = db().await;
    db.ring().await;
    let revoked = rec("userData", 1, KeyStatus::Revoked);
    let material = revoked.wrapped_key.clone().unwrap();
    // A reader in the middle of a transaction that saw the material: the checkpoint
    // cannot move past its snapshot.
    let mut reader = db.raw.acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_versions")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let destroy = StatusChange {
        purpose: p("userData"),
        version: v(1),
        from: vec![KeyStatus::Revoked],
        to: KeyStatus::Destroyed,
        reason: None,
        now: 10,
    };
    let e = db.store.set_status(&destroy).await.unwrap_err().to_string();
    assert!(e.contains("still in the database's WAL"), "{e}");
    // The state did change (honestly reported above as not yet erased).
    let now = db
        .store
        .get_version(&p("userData"), v(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, KeyStatus::Destroyed);
    sqlx::query("ROLLBACK").execute(&mut *reader).await.unwrap();
    drop(reader);
    // Destroying again retries the erasure, which now succeeds.
    assert_eq!(
        db.store.set_status(&destroy).await.unwrap(),
        StatusOutcome::WrongState(KeyStatus::Destroyed)
    );
    db.raw.close().await;
    for entry in std::fs::read_dir(db.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(material.len()).any(|w| w == material),
            "material left in a file"
        );
    }
    assert_eq!(db.sealer.refused(), 0, "nothing refused on the way");
}
