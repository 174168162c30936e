//! # keyflow-keystore-contract
//!
//! The behaviour every [`Keystore`] backend must show, as one test suite. A backend's
//! own test calls [`run_all`] with a function that makes a fresh, empty keystore:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn sqlite_passes_the_contract() {
//!     keyflow_keystore_contract::run_all(|| async { Arc::new(open_fresh().await) as Arc<dyn Keystore> }).await;
//! }
//! ```
//!
//! Each check panics (with a message naming the check) on the first violation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test suite

use std::future::Future;
use std::sync::Arc;

use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::keystore::{CreateOutcome, Keystore, RotateOutcome};
use keyflow_kms::model::{KeyStatus, KeyVersionRecord, VersionFilter};
use keyflow_kms::row_mac::RowSealer;
use keyflow_kms::{KeyVersion, Purpose};

pub mod audit;
pub mod legacy;
pub mod lifecycle;

fn p(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

fn v(n: u32) -> KeyVersion {
    KeyVersion::new(n).unwrap()
}

/// A record with recognisable fake wrapped bytes (the store never interprets them).
fn rec(purpose: &str, version: u32, now: i64) -> KeyVersionRecord {
    let mut wrapped = vec![0u8; 60];
    for (i, b) in wrapped.iter_mut().enumerate() {
        *b = (i as u8) ^ (version as u8);
    }
    KeyVersionRecord {
        purpose: p(purpose),
        version: v(version),
        status: KeyStatus::Active,
        algorithm: "AES-256".into(),
        wrapped_key: Some(wrapped),
        kek_id: "kek-1".into(),
        created_at: now,
        status_changed_at: now,
        encryptions: 0,
        revoked_reason: None,
    }
}

/// Version `n` of `purpose` as stored (it must exist).
async fn stored(store: &dyn Keystore, purpose: &str, n: u32) -> KeyVersionRecord {
    store
        .get_version(&p(purpose), v(n))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{purpose} v{n} is stored"))
}

/// Asserts that `purpose` has no version `n` (the counterpart of [`stored`]).
async fn assert_absent(store: &dyn Keystore, purpose: &str, n: u32) {
    assert!(
        store
            .get_version(&p(purpose), v(n))
            .await
            .unwrap()
            .is_none(),
        "{purpose} v{n} is not stored"
    );
}

/// Rotates `purpose` once as a client would: read the active version, try to insert
/// the next, retry on conflict. Returns the version it created.
async fn rotate_once(store: &dyn Keystore, purpose: &str) -> u32 {
    for _ in 0..1000 {
        let active = store.active_version(&p(purpose)).await.unwrap().unwrap();
        let next = active.version.get() + 1;
        match store
            .rotate(&rec(purpose, next, 1000 + i64::from(next)), 5000)
            .await
            .unwrap()
        {
            RotateOutcome::Rotated => return next,
            RotateOutcome::Conflict => tokio::task::yield_now().await,
        }
    }
    panic!("rotate_once: never won a rotation");
}

/// Asserts the ring invariants: versions 1..=n contiguous, exactly one active (the
/// highest), every other version `rotating`.
async fn assert_ring(store: &dyn Keystore, purpose: &str, n: u32) {
    let filter = VersionFilter {
        purpose: Some(p(purpose)),
        status: None,
    };
    let ring = store.list_versions(&filter).await.unwrap();
    let versions: Vec<u32> = ring.iter().map(|r| r.version.get()).collect();
    assert_eq!(
        versions,
        (1..=n).collect::<Vec<_>>(),
        "ring of {purpose}: versions contiguous"
    );
    let active: Vec<u32> = ring
        .iter()
        .filter(|r| r.status == KeyStatus::Active)
        .map(|r| r.version.get())
        .collect();
    assert_eq!(
        active,
        vec![n],
        "ring of {purpose}: exactly one active, the newest"
    );
    assert!(
        ring.iter()
            .filter(|r| r.version.get() != n)
            .all(|r| r.status == KeyStatus::Rotating),
        "ring of {purpose}: older versions rotating"
    );
}

/// Installs a row sealer of a fresh random KEK in `store` (what an unlock does) and
/// returns it.
pub fn install_sealer(store: &dyn Keystore) -> Arc<RowSealer> {
    let kek = Kek::generate(&OsRng).unwrap();
    let sealer = Arc::new(RowSealer::new(&kek).unwrap());
    store.install_row_sealer(sealer.clone());
    sealer
}

/// Runs every check, each on a fresh keystore from `make` (with a row sealer
/// installed, except for [`rows_need_a_sealer`]).
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Keystore>>,
{
    let sealed = || async {
        let store = make().await;
        install_sealer(&*store);
        store
    };
    rows_need_a_sealer(make().await).await;
    meta_is_set_once(sealed().await).await;
    first_version_and_lookups(sealed().await).await;
    rotation_semantics(sealed().await).await;
    concurrent_first_creation(sealed().await).await;
    concurrent_rotations(sealed().await).await;
    usage_counters(sealed().await).await;
    listing_filters(sealed().await).await;
    tokens(sealed().await).await;
    lifecycle::policies(sealed().await).await;
    lifecycle::status_changes(sealed().await).await;
    lifecycle::insert_versions(sealed().await).await;
    lifecycle::rewrap_all(sealed().await).await;
    lifecycle::leases(sealed().await).await;
    lifecycle::generation(sealed().await).await;
    legacy::import_legacy(sealed().await).await;
    nonces(make().await).await;
}

/// Request-integrity nonces: remembered until they expire, refused meanwhile; of many
/// callers racing with one nonce exactly one is told it is fresh. Needs no sealer.
pub async fn nonces(store: Arc<dyn Keystore>) {
    assert!(store.remember_nonce("nonce-a", 100, 0).await.unwrap());
    assert!(
        !store.remember_nonce("nonce-a", 200, 50).await.unwrap(),
        "replay"
    );
    assert!(
        !store.remember_nonce("nonce-a", 200, 100).await.unwrap(),
        "expiry inclusive"
    );
    assert!(
        store.remember_nonce("nonce-a", 300, 101).await.unwrap(),
        "expired: fresh again"
    );
    assert!(store.remember_nonce("nonce-b", 300, 101).await.unwrap());
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.remember_nonce("nonce-race", 500, 101).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    for r in racers {
        fresh += usize::from(r.await.unwrap());
    }
    assert_eq!(fresh, 1, "exactly one racer wins");
}

/// Before a row sealer is installed (the KEK is not unlocked), key versions, tokens
/// and policies can be neither read nor written: nothing unverified is trusted.
/// Metadata (which holds the KEK id the unlock checks) stays readable.
pub async fn rows_need_a_sealer(store: Arc<dyn Keystore>) {
    assert!(store.row_sealer().is_none());
    assert_eq!(store.get_meta("kek_id").await.unwrap(), None);
    let refused = |r: Result<(), keyflow_kms::StoreError>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("unlocked"), "{what}: {e}");
    };
    refused(
        store
            .list_versions(&VersionFilter::default())
            .await
            .map(drop),
        "list_versions",
    );
    refused(
        store.get_version(&p("a"), v(1)).await.map(drop),
        "get_version",
    );
    refused(
        store.active_version(&p("a")).await.map(drop),
        "active_version",
    );
    refused(
        store.create_first(&rec("a", 1, 1)).await.map(drop),
        "create_first",
    );
    refused(store.list_tokens().await.map(drop), "list_tokens");
    refused(store.get_policy(&p("a")).await.map(drop), "get_policy");
    refused(store.list_policies().await.map(drop), "list_policies");
    let sealer = install_sealer(&*store);
    assert!(Arc::ptr_eq(&store.row_sealer().unwrap(), &sealer));
    assert_eq!(
        store.seal_legacy_rows().await.unwrap(),
        0,
        "nothing pending"
    );
    assert!(store
        .list_versions(&VersionFilter::default())
        .await
        .unwrap()
        .is_empty());
}

/// `init_meta` sets a value once; a second writer gets the first value back.
pub async fn meta_is_set_once(store: Arc<dyn Keystore>) {
    assert_eq!(
        store.get_meta("kek_id").await.unwrap(),
        None,
        "meta: empty at first"
    );
    assert_eq!(
        store.init_meta("kek_id", "a").await.unwrap(),
        "a",
        "meta: first set"
    );
    assert_eq!(
        store.init_meta("kek_id", "b").await.unwrap(),
        "a",
        "meta: never overwritten"
    );
    assert_eq!(
        store.get_meta("kek_id").await.unwrap().as_deref(),
        Some("a")
    );
}

/// Version 1 is created once; every field round-trips exactly.
pub async fn first_version_and_lookups(store: Arc<dyn Keystore>) {
    assert!(store
        .active_version(&p("userData"))
        .await
        .unwrap()
        .is_none());
    assert_absent(&*store, "userData", 1).await;
    let mut first = rec("userData", 1, 1_795_861_568_123);
    first.encryptions = 0;
    assert_eq!(
        store.create_first(&first).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store.create_first(&rec("userData", 1, 2)).await.unwrap(),
        CreateOutcome::AlreadyExists,
        "create_first: second call changes nothing"
    );
    let got = stored(&*store, "userData", 1).await;
    assert_eq!(
        got, first,
        "record round-trips exactly (wrapped bytes included)"
    );
    assert_eq!(
        store.active_version(&p("userData")).await.unwrap(),
        Some(first)
    );
    // Names are case-sensitive and distinct.
    assert!(store
        .active_version(&p("userdata"))
        .await
        .unwrap()
        .is_none());
}

/// Rotation demotes exactly the expected active version and refuses stale or gapped
/// attempts without writing anything.
pub async fn rotation_semantics(store: Arc<dyn Keystore>) {
    store
        .create_first(&rec("financialData", 1, 10))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate(&rec("financialData", 2, 20), 20)
            .await
            .unwrap(),
        RotateOutcome::Rotated
    );
    assert_ring(&*store, "financialData", 2).await;
    let old = stored(&*store, "financialData", 1).await;
    assert_eq!(
        old.status_changed_at, 20,
        "rotation stamps the demoted version"
    );
    for (purpose, version) in [
        ("financialData", 2), // stale: version 2 again
        ("financialData", 4), // a gap: version 4 while 2 is active
        ("financialData", 1), // version 1 can never be "rotated to"
        ("nobody", 2),        // an unknown purpose
    ] {
        assert_eq!(
            store.rotate(&rec(purpose, version, 30), 30).await.unwrap(),
            RotateOutcome::Conflict,
            "{purpose} v{version}"
        );
    }
    assert_ring(&*store, "financialData", 2).await;
    // No conflict wrote anything.
    assert_absent(&*store, "nobody", 2).await;
    for n in 3..=12 {
        assert_eq!(rotate_once(&*store, "financialData").await, n);
    }
    assert_ring(&*store, "financialData", 12).await;
}

/// Many writers creating the same purpose: exactly one succeeds.
pub async fn concurrent_first_creation(store: Arc<dyn Keystore>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_first(&rec("healthData", 1, i)).await.unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one concurrent create_first wins");
    assert_ring(&*store, "healthData", 1).await;
}

/// Concurrent rotations each produce exactly one new version; the ring stays
/// contiguous with exactly one active version.
pub async fn concurrent_rotations(store: Arc<dyn Keystore>) {
    store.create_first(&rec("documents", 1, 1)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for _ in 0..5 {
                made.push(rotate_once(&*s, "documents").await);
            }
            made
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (2..=21).collect::<Vec<_>>(),
        "each rotation made exactly one distinct version"
    );
    assert_ring(&*store, "documents", 21).await;
}

/// Usage counters add up, including under concurrency.
pub async fn usage_counters(store: Arc<dyn Keystore>) {
    store.create_first(&rec("userData", 1, 1)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.add_usage(&p("userData"), v(1), 4096).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = stored(&*store, "userData", 1).await;
    assert_eq!(
        r.encryptions,
        40 * 4096,
        "usage: concurrent increments all counted"
    );
    // Counting on an unknown version changes nothing and is not an error.
    store.add_usage(&p("userData"), v(9), 1).await.unwrap();
    assert_absent(&*store, "userData", 9).await;
}

/// Listing filters by purpose and state, ordered by purpose then version.
pub async fn listing_filters(store: Arc<dyn Keystore>) {
    store.create_first(&rec("b", 1, 1)).await.unwrap();
    store.create_first(&rec("a", 1, 1)).await.unwrap();
    rotate_once(&*store, "a").await;
    let all = store
        .list_versions(&VersionFilter::default())
        .await
        .unwrap();
    let keys: Vec<(String, u32)> = all
        .iter()
        .map(|r| (r.purpose.to_string(), r.version.get()))
        .collect();
    assert_eq!(
        keys,
        vec![("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]
    );
    let active = store
        .list_versions(&VersionFilter {
            purpose: None,
            status: Some(KeyStatus::Active),
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 2);
    let a_rot = store
        .list_versions(&VersionFilter {
            purpose: Some(p("a")),
            status: Some(KeyStatus::Rotating),
        })
        .await
        .unwrap();
    assert_eq!(a_rot.len(), 1);
    assert_eq!(a_rot[0].version.get(), 1);
    let none = store
        .list_versions(&VersionFilter {
            purpose: Some(p("zzz")),
            status: None,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Tokens: stored and listed exactly, revoked once, unknown ids refused.
pub async fn tokens(store: Arc<dyn Keystore>) {
    use keyflow_kms::access::{Role, TokenRecord};
    let t = |id: &str, role: Role, purposes: &[&str], created: i64| TokenRecord {
        id: id.into(),
        secret_hash: [created as u8; 32],
        role,
        purposes: purposes.iter().map(|x| p(x)).collect(),
        name: format!("token {id}"),
        created_at: created,
        expires_at: if role == Role::Auditor {
            Some(created + 1000)
        } else {
            None
        },
        revoked_at: None,
    };
    assert!(store.list_tokens().await.unwrap().is_empty());
    let a = t("00000000000000aa", Role::Admin, &[], 1);
    let s = t(
        "00000000000000bb",
        Role::Service,
        &["userData", "financialData"],
        2,
    );
    let r = t("00000000000000cc", Role::Auditor, &[], 3);
    for x in [&s, &a, &r] {
        store.insert_token(x).await.unwrap();
    }
    assert!(
        store.insert_token(&a).await.is_err(),
        "token ids are unique"
    );
    assert_eq!(
        store.list_tokens().await.unwrap(),
        vec![a.clone(), s.clone(), r.clone()]
    );
    assert!(store.revoke_token(&s.id, 50).await.unwrap());
    assert!(
        !store.revoke_token(&s.id, 60).await.unwrap(),
        "revoked once"
    );
    assert!(!store.revoke_token("ffffffffffffffff", 60).await.unwrap());
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed[1].revoked_at, Some(50));
    assert_eq!(listed[0].revoked_at, None);
}
