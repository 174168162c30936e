//! The in-memory keystore against the shared contract suite, and against the SQLite
//! keystore itself on the edges the suite leaves open (constraint refusals, saturating
//! counts, when the generation moves): one script runs on both and every answer must match.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::fmt::Debug;
use std::sync::Arc;

use keyflow_kms::access::{Role, TokenRecord};
use keyflow_kms::audit::AuditStore;
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, VersionFilter,
};
use keyflow_kms::{KeyVersion, Keystore, Purpose, StoreError};
use keyflow_store_sqlite::SqliteKeystore;
use keyflow_testkit::memory::MemoryKeystore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_the_keystore_contract() {
    keyflow_keystore_contract::run_all(|| async {
        Arc::new(MemoryKeystore::new()) as Arc<dyn Keystore>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_the_audit_contract() {
    keyflow_keystore_contract::audit::run_audit(|| async {
        Arc::new(MemoryKeystore::new()) as Arc<dyn AuditStore>
    })
    .await;
}

#[tokio::test]
async fn memory_answers_the_edge_script_as_sqlite_does() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteKeystore::open(&dir.path().join("keyflow.db"))
        .await
        .unwrap();
    let expected = edge_script(&sqlite).await;
    let got = edge_script(&MemoryKeystore::new()).await;
    for (line, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "line {line} of the transcript: memory, then SQLite");
    }
    assert_eq!(got.len(), expected.len());
}

fn p(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

fn v(n: u32) -> KeyVersion {
    KeyVersion::new(n).unwrap()
}

fn rec(purpose: &str, version: u32, status: KeyStatus, material: bool) -> KeyVersionRecord {
    KeyVersionRecord {
        purpose: p(purpose),
        version: v(version),
        status,
        algorithm: "AES-256".into(),
        wrapped_key: material.then(|| vec![version as u8; 60]),
        kek_id: "kek-1".into(),
        created_at: i64::from(version),
        status_changed_at: i64::from(version),
        encryptions: 0,
        revoked_reason: None,
    }
}

fn change(purpose: &str, version: u32, from: &[KeyStatus], to: KeyStatus) -> StatusChange {
    StatusChange {
        purpose: p(purpose),
        version: v(version),
        from: from.to_vec(),
        to,
        reason: Some("laptop stolen".into()),
        now: 100,
    }
}

fn token(id: &str, created_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        secret_hash: [7; 32],
        role: Role::Service,
        purposes: vec![p("a"), p("b")],
        name: format!("token {id}"),
        created_at,
        expires_at: None,
        revoked_at: None,
    }
}

fn rewrapped(purpose: &str, version: u32) -> RewrappedKey {
    RewrappedKey {
        purpose: p(purpose),
        version: v(version),
        wrapped_key: vec![0xEE; 60],
    }
}

/// What each call answered, one line per call; refusals are reduced to `error`
/// because the backends word them differently.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn note<T: Debug>(&mut self, what: &str, answer: Result<T, StoreError>) {
        let answer = answer.map_or_else(|_| "error".to_owned(), |a| format!("{a:?}"));
        self.0.push(format!("{what}: {answer}"));
    }

    /// Every version (material included: the bytes are fake), the generation, the
    /// metadata, tokens and policies.
    async fn state(&mut self, store: &dyn Keystore) {
        for r in store
            .list_versions(&VersionFilter::default())
            .await
            .unwrap()
        {
            self.0.push(format!("  {r:?} material {:?}", r.wrapped_key));
        }
        self.note("  generation", store.generation().await);
        for key in ["generation", "kek_id"] {
            self.note(&format!("  meta {key}"), store.get_meta(key).await);
        }
        self.note("  tokens", store.list_tokens().await);
        self.note("  policies", store.list_policies().await);
    }
}

async fn edge_script(store: &dyn Keystore) -> Vec<String> {
    use KeyStatus::*;
    let mut t = Transcript::default();
    let s = store;
    t.note(
        "versions before unlock",
        s.list_versions(&VersionFilter::default()).await,
    );
    let old_rows = keyflow_keystore_contract::install_sealer(s);
    let new_kek =
        keyflow_kms::keyflow_core::kek::Kek::generate(&keyflow_kms::keyflow_core::OsRng).unwrap();
    let new_rows = Arc::new(keyflow_kms::row_mac::RowSealer::new(&new_kek).unwrap());

    t.note("fresh generation", s.generation().await);
    t.note("generation is metadata", s.get_meta("generation").await);
    t.note("init_meta keeps it", s.init_meta("generation", "x").await);

    t.note(
        "create v2",
        s.create_first(&rec("a", 2, Active, true)).await,
    );
    t.note(
        "create rotating",
        s.create_first(&rec("a", 1, Rotating, true)).await,
    );
    t.note(
        "create bare",
        s.create_first(&rec("a", 1, Active, false)).await,
    );
    t.note("create a", s.create_first(&rec("a", 1, Active, true)).await);
    let destroyed_with_material = rec("a", 2, Destroyed, true);
    t.note(
        "rotate to a bad row",
        s.rotate(&destroyed_with_material, 9).await,
    );
    t.note(
        "rotate to bare",
        s.rotate(&rec("a", 2, Active, false), 9).await,
    );
    t.state(s).await;
    t.note("rotate a", s.rotate(&rec("a", 2, Active, true), 10).await);
    t.note(
        "rotate to rotating",
        s.rotate(&rec("a", 3, Rotating, true), 11).await,
    );
    t.note("no active left", s.active_version(&p("a")).await);
    t.note(
        "rotate from none",
        s.rotate(&rec("a", 4, Active, true), 12).await,
    );
    t.note("create b", s.create_first(&rec("b", 1, Active, true)).await);

    t.note(
        "usage saturates",
        s.add_usage(&p("b"), v(1), u64::MAX).await,
    );
    t.note("usage elsewhere", s.add_usage(&p("zzz"), v(1), 5).await);
    t.note("usage read", s.get_version(&p("b"), v(1)).await);

    t.note(
        "to active",
        s.set_status(&change("a", 1, &[Rotating], Active)).await,
    );
    t.note(
        "not found",
        s.set_status(&change("a", 9, &[Rotating], Revoked)).await,
    );
    t.note(
        "wrong state",
        s.set_status(&change("a", 1, &[Active], Revoked)).await,
    );
    t.state(s).await;
    t.note(
        "deprecate",
        s.set_status(&change("a", 1, &[Rotating], Deprecated)).await,
    );
    t.note(
        "revoke",
        s.set_status(&change("a", 2, &[Rotating], Revoked)).await,
    );
    let mut no_reason = change("a", 1, &[Deprecated], Revoked);
    no_reason.reason = None;
    t.note("revoke without reason", s.set_status(&no_reason).await);
    t.note(
        "destroy",
        s.set_status(&change("a", 2, &[Revoked], Destroyed)).await,
    );
    let back = change("a", 2, &[Destroyed], Deprecated);
    t.note("destroyed to deprecated", s.set_status(&back).await);
    t.note(
        "destroyed to revoked",
        s.set_status(&change("a", 2, &[Destroyed], Revoked)).await,
    );
    let mut again = change("a", 2, &[Destroyed], Destroyed);
    again.now = 200;
    t.note("destroyed again", s.set_status(&again).await);
    t.state(s).await;

    t.note("insert nothing", s.insert_versions(&[]).await);
    t.note(
        "insert bad row",
        s.insert_versions(&[rec("c", 1, Destroyed, true)]).await,
    );
    t.note(
        "insert bare",
        s.insert_versions(&[rec("c", 1, Rotating, false)]).await,
    );
    let twice = [rec("c", 1, Rotating, true), rec("c", 1, Rotating, true)];
    t.note("insert twice", s.insert_versions(&twice).await);
    let two_active = [rec("c", 1, Active, true), rec("c", 2, Active, true)];
    t.note("insert two active", s.insert_versions(&two_active).await);
    t.note(
        "insert second active",
        s.insert_versions(&[rec("b", 2, Active, true)]).await,
    );
    let mut counted = rec("a", 5, Active, true);
    counted.encryptions = u64::MAX;
    let restore = [counted, rec("c", 1, Destroyed, false)];
    t.note(
        "insert where none is active",
        s.insert_versions(&restore).await,
    );
    let revoked = VersionFilter {
        purpose: None,
        status: Some(Revoked),
    };
    t.note("list revoked", s.list_versions(&revoked).await);
    t.state(s).await;

    for (id, created_at) in [("0c", 5), ("0a", 5), ("0b", 1)] {
        t.note("insert token", s.insert_token(&token(id, created_at)).await);
    }
    t.note("duplicate token", s.insert_token(&token("0a", 9)).await);
    t.note("revoke token", s.revoke_token("0a", 50).await);
    t.note("revoke token again", s.revoke_token("0a", 60).await);

    let policy = Policy::default();
    let never_rotates = Policy {
        rotation_days: 0,
        ..policy
    };
    let no_budget = Policy {
        max_encryptions: 0,
        ..policy
    };
    let huge_budget = Policy {
        max_encryptions: u64::MAX,
        ..policy
    };
    t.note("policy 0 days", s.set_policy(&p("a"), &never_rotates).await);
    t.note("policy 0 budget", s.set_policy(&p("a"), &no_budget).await);
    t.note(
        "policy huge budget",
        s.set_policy(&p("b"), &huge_budget).await,
    );
    t.note("policy", s.set_policy(&p("a"), &policy).await);
    t.note("policy read", s.get_policy(&p("b")).await);
    t.state(s).await;

    t.note("kek recorded", s.init_meta("kek_id", "kek-1").await);
    let mut stale = rec("d", 1, Active, true);
    stale.kek_id = "kek-0".into();
    t.note("stale create", s.create_first(&stale).await);
    let mut stale_existing = rec("a", 1, Active, true);
    stale_existing.kek_id = "kek-0".into();
    t.note(
        "stale create of a ring",
        s.create_first(&stale_existing).await,
    );
    let mut stale_gap = rec("a", 9, Active, true);
    stale_gap.kek_id = "kek-0".into();
    t.note("stale rotate with a gap", s.rotate(&stale_gap, 20).await);
    let mut stale_bare = rec("d", 1, Destroyed, false);
    stale_bare.kek_id = "kek-0".into();
    t.note("stale but bare", s.insert_versions(&[stale_bare]).await);
    let stale_and_taken = [stale.clone(), rec("a", 1, Rotating, true)];
    t.note("stale and taken", s.insert_versions(&stale_and_taken).await);

    let all = [
        rewrapped("a", 1),
        rewrapped("a", 3),
        rewrapped("a", 5),
        rewrapped("b", 1),
    ];
    t.note(
        "rewrap unknown meta",
        s.rewrap_all("nope", "kek-1", "kek-2", &all, &new_rows)
            .await,
    );
    let with_destroyed = [&all[..], &[rewrapped("a", 2)]].concat();
    t.note(
        "rewrap destroyed",
        s.rewrap_all("kek_id", "kek-1", "kek-2", &with_destroyed, &new_rows)
            .await,
    );
    let with_unknown = [&all[..], &[rewrapped("a", 8)]].concat();
    t.note(
        "rewrap unknown",
        s.rewrap_all("kek_id", "kek-1", "kek-2", &with_unknown, &new_rows)
            .await,
    );
    let listed_twice = [&all[..], &[rewrapped("b", 1)]].concat();
    t.note(
        "rewrap twice",
        s.rewrap_all("kek_id", "kek-1", "kek-2", &listed_twice, &new_rows)
            .await,
    );
    t.note(
        "same kek twice",
        s.rewrap_all("kek_id", "kek-1", "kek-1", &listed_twice, &old_rows)
            .await,
    );
    t.state(s).await;
    t.note(
        "rewrap",
        s.rewrap_all("kek_id", "kek-1", "kek-2", &all, &new_rows)
            .await,
    );
    s.install_row_sealer(new_rows.clone());
    t.note(
        "rewrap nothing",
        s.rewrap_all("kek_id", "kek-2", "kek-2", &[], &new_rows)
            .await,
    );
    t.note(
        "old kek",
        s.insert_versions(&[rec("e", 1, Active, true)]).await,
    );
    t.state(s).await;

    t.note("lease for 0 ms", s.try_lease("job", "h1", 10, 0).await);
    t.note("expired at once", s.try_lease("job", "h2", 10, 5).await);
    t.note("held", s.try_lease("job", "h1", 14, 5).await);
    t.note("negative ttl", s.try_lease("job", "h2", 14, -100).await);
    t.note("taken over", s.try_lease("job", "h1", 0, 5).await);
    t.note("forever", s.try_lease("job", "h1", i64::MAX - 1, 100).await);
    t.note(
        "not before the end",
        s.try_lease("job", "h2", i64::MAX - 1, 1).await,
    );
    t.note("at the end", s.try_lease("job", "h2", i64::MAX, 1).await);
    t.note("release by another", s.release_lease("job", "h1").await);
    t.note("still held", s.try_lease("job", "h1", i64::MAX, 1).await);
    t.note("release", s.release_lease("job", "h2").await);
    t.note("release unknown", s.release_lease("other", "h2").await);
    t.note("free again", s.try_lease("job", "h1", i64::MAX, 1).await);
    t.state(s).await;
    t.0
}
