//! Several KeyFlow instances on one PostgreSQL database: each "instance" is its own
//! keystore with its own connection pool. Needs `TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use keyflow_kms::keystore::{Coordination, KekBinding, KeyVersions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyflow_kms::keystore::{CreateOutcome, RotateOutcome};
use keyflow_kms::model::{KeyStatus, KeyVersionRecord, VersionFilter};
use keyflow_kms::{KeyVersion, Purpose};
use keyflow_store_postgres::{KeyChange, PoolSettings, PostgresKeystore};

fn rec(purpose: &str, version: u32) -> KeyVersionRecord {
    KeyVersionRecord {
        purpose: Purpose::new(purpose).unwrap(),
        version: KeyVersion::new(version).unwrap(),
        status: KeyStatus::Active,
        algorithm: "AES-256".into(),
        wrapped_key: Some(vec![version as u8; 60]),
        kek_id: "kek-1".into(),
        created_at: i64::from(version),
        status_changed_at: i64::from(version),
        encryptions: 0,
        revoked_reason: None,
    }
}

/// The row sealer every instance of a test shares (they hold one KEK).
fn shared_sealer() -> Arc<keyflow_kms::row_mac::RowSealer> {
    static SEALER: std::sync::OnceLock<Arc<keyflow_kms::row_mac::RowSealer>> =
        std::sync::OnceLock::new();
    SEALER
        .get_or_init(|| {
            let kek =
                keyflow_kms::keyflow_core::kek::Kek::generate(&keyflow_kms::keyflow_core::OsRng)
                    .unwrap();
            Arc::new(keyflow_kms::row_mac::RowSealer::new(&kek).unwrap())
        })
        .clone()
}

async fn instance(url: &str) -> PostgresKeystore {
    let store = PostgresKeystore::connect(url, &PoolSettings::with_max_connections(3))
        .await
        .unwrap();
    // As after an unlock with the instances' shared KEK.
    store.install_row_sealer(shared_sealer());
    store
}

/// Rotates once as a client does: read the active version, try the next, retry on
/// conflict. Returns the version made.
async fn rotate_once(store: &PostgresKeystore, purpose: &str) -> u32 {
    for _ in 0..1000 {
        let active = store
            .active_version(&Purpose::new(purpose).unwrap())
            .await
            .unwrap()
            .unwrap();
        let next = active.version.get() + 1;
        match store.rotate(&rec(purpose, next), 5000).await.unwrap() {
            RotateOutcome::Rotated => return next,
            RotateOutcome::Conflict => tokio::task::yield_now().await,
        }
    }
    panic!("never won a rotation");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_from_two_instances_make_one_contiguous_ring() {
    common::with_database(
        "concurrent_rotations_from_two_instances",
        |_, url| async move {
            let a = instance(&url).await;
            let b = instance(&url).await;
            assert_eq!(
                a.create_first(&rec("userData", 1)).await.unwrap(),
                CreateOutcome::Created
            );
            assert_eq!(
                b.create_first(&rec("userData", 1)).await.unwrap(),
                CreateOutcome::AlreadyExists,
                "the other instance sees the first version"
            );
            let g0 = a.generation().await.unwrap();
            let mut tasks = Vec::new();
            for i in 0..6 {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                tasks.push(tokio::spawn(async move {
                    let mut made = Vec::new();
                    for _ in 0..5 {
                        made.push(rotate_once(&s, "userData").await);
                    }
                    made
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all.sort_unstable();
            assert_eq!(
                all,
                (2..=31).collect::<Vec<_>>(),
                "one new version per won rotation"
            );
            let ring = b
                .list_versions(&VersionFilter {
                    purpose: Some(Purpose::new("userData").unwrap()),
                    status: None,
                })
                .await
                .unwrap();
            let active: Vec<u32> = ring
                .iter()
                .filter(|r| r.status == KeyStatus::Active)
                .map(|r| r.version.get())
                .collect();
            assert_eq!(ring.len(), 31);
            assert_eq!(active, vec![31], "exactly one active version, the newest");
            // Lost races rolled back their generation bump: one bump per committed change.
            assert_eq!(b.generation().await.unwrap(), g0 + 30);
        },
    )
    .await;
}

/// Lease time is the `now` each caller passes (the server passes its clock's), so the
/// test moves it by numbers instead of sleeping through the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_s_lease_is_taken_over_after_it_expires() {
    common::with_database("lease_failover", |_, url| async move {
        const TTL: i64 = 600;
        let a = instance(&url).await;
        let b = instance(&url).await;
        let t0 = now_ms();
        assert!(a
            .try_lease("scheduler", "instance-a", t0, TTL)
            .await
            .unwrap());
        // A renews while alive, each time before its lease runs out; B never gets in,
        // even long after the first lease would have expired.
        let mut last_renewal = t0;
        for step in 1..=4 {
            last_renewal = t0 + step * 450;
            assert!(a
                .try_lease("scheduler", "instance-a", last_renewal, TTL)
                .await
                .unwrap());
            assert!(
                !b.try_lease("scheduler", "instance-b", last_renewal + 1, TTL)
                    .await
                    .unwrap(),
                "a live leader keeps the lease"
            );
        }
        // A dies: no release, no more renewals, its connections gone.
        a.close().await;
        drop(a);
        assert!(
            !b.try_lease("scheduler", "instance-b", last_renewal + TTL - 1, TTL)
                .await
                .unwrap(),
            "not before the dead leader's lease expires"
        );
        assert!(
            b.try_lease("scheduler", "instance-b", last_renewal + TTL, TTL)
                .await
                .unwrap(),
            "taken over once it expired"
        );
        let now = last_renewal + TTL;
        // The new leader renews; a restarted A waits its turn.
        let a2 = instance(&url).await;
        assert!(b
            .try_lease("scheduler", "instance-b", now + 100, TTL)
            .await
            .unwrap());
        assert!(!a2
            .try_lease("scheduler", "instance-a", now + 200, TTL)
            .await
            .unwrap());
        // A clean shutdown hands over at once.
        b.release_lease("scheduler", "instance-b").await.unwrap();
        assert!(a2
            .try_lease("scheduler", "instance-a", now + 300, TTL)
            .await
            .unwrap());
    })
    .await;
}

/// Waits for the next event that satisfies `want`, up to 10 s.
async fn wait_for(
    events: &Arc<Mutex<Vec<KeyChange>>>,
    from: usize,
    want: impl Fn(&KeyChange) -> bool,
) -> KeyChange {
    let started = Instant::now();
    loop {
        if let Some(e) = events.lock().unwrap()[from..].iter().find(|e| want(e)) {
            return *e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no such event: {:?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_instance_notifies_the_others_at_once() {
    common::with_database("notify_across_instances", |db, url| async move {
        let a = instance(&url).await;
        let b = instance(&url).await;
        b.create_first(&rec("userData", 1)).await.unwrap();

        // The signal the server's revalidation loop waits on.
        let signal = a.listen().await.unwrap();
        let wait = tokio::spawn(async move { signal.notified().await });
        rotate_once(&b, "userData").await;
        // Pushed, not polled: nothing here polls, so only the notification can wake the
        // waiter. The bound is generous on purpose (a loaded machine); the product's
        // "within a second" rests on this push and on the 250 ms poll behind it.
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("NOTIFY reached the other instance")
            .unwrap();
        // The trait's hook returns the same running signal.
        assert!(a.change_notifier().is_some());

        // The callback form: the payload is the generation the writer committed.
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let listener = a
            .listen_with(move |e| sink.lock().unwrap().push(e))
            .await
            .unwrap();
        rotate_once(&b, "userData").await;
        let g = b.generation().await.unwrap();
        let e = wait_for(&events, 0, |e| matches!(e, KeyChange::Committed { .. })).await;
        assert_eq!(
            e,
            KeyChange::Committed {
                generation: Some(g)
            }
        );

        // A change that does not commit announces nothing.
        let seen = events.lock().unwrap().len();
        assert_eq!(
            b.rotate(&rec("userData", 2), 1).await.unwrap(),
            RotateOutcome::Conflict
        );
        // Notifications arrive in commit order, so once the next committed change is
        // heard, anything the rolled-back rotation had sent would be there before it.
        rotate_once(&b, "userData").await;
        let g = b.generation().await.unwrap();
        wait_for(&events, seen, |e| matches!(e, KeyChange::Committed { .. })).await;
        assert_eq!(
            events.lock().unwrap()[seen..],
            [KeyChange::Committed {
                generation: Some(g)
            }],
            "rolled back: no NOTIFY"
        );

        // The listener's connection is killed: it reconnects, says so, and hears the
        // next change.
        let admin = instance(&db.url(&url)).await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'keyflow-listener' AND datname = $1",
        )
        .bind(&db.name)
        .fetch_one(admin.pool())
        .await
        .unwrap();
        assert!(killed >= 1, "listener connections found");
        wait_for(&events, seen, |e| *e == KeyChange::Resubscribed).await;
        let seen = events.lock().unwrap().len();
        rotate_once(&b, "userData").await;
        let g = b.generation().await.unwrap();
        let e = wait_for(&events, seen, |e| matches!(e, KeyChange::Committed { .. })).await;
        assert_eq!(
            e,
            KeyChange::Committed {
                generation: Some(g)
            }
        );
        assert!(listener.is_running());
    })
    .await;
}
