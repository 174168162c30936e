//! Contract checks of the lifecycle methods: policies, state changes, restore inserts,
//! KEK rewrap, leases and the change generation.

use std::sync::Arc;

use keyflow_kms::keystore::{Keystore, WriteOutcome};
use keyflow_kms::model::{KeyStatus, Policy, RewrappedKey, StatusChange, StatusOutcome};

use crate::{assert_absent, p, rec, rotate_once, stored, v};

/// Policies are absent until set, then round-trip exactly and can be replaced.
pub async fn policies(store: Arc<dyn Keystore>) {
    assert_eq!(store.get_policy(&p("userData")).await.unwrap(), None);
    let a = Policy {
        rotation_days: 30,
        grace_days: 10,
        warn_days: 3,
        max_encryptions: 1 << 20,
    };
    store.set_policy(&p("userData"), &a).await.unwrap();
    store
        .set_policy(&p("financialData"), &Policy::default())
        .await
        .unwrap();
    assert_eq!(store.get_policy(&p("userData")).await.unwrap(), Some(a));
    let b = Policy {
        rotation_days: 60,
        ..a
    };
    store.set_policy(&p("userData"), &b).await.unwrap();
    assert_eq!(
        store.list_policies().await.unwrap(),
        vec![(p("financialData"), Policy::default()), (p("userData"), b)],
        "policies: replaced, listed by purpose"
    );
}

fn change(version: u32, from: &[KeyStatus], to: KeyStatus, now: i64) -> StatusChange {
    StatusChange {
        purpose: p("userData"),
        version: v(version),
        from: from.to_vec(),
        to,
        reason: Some("laptop stolen".into()),
        now,
    }
}

/// State changes are compare-and-set; destruction erases the material.
pub async fn status_changes(store: Arc<dyn Keystore>) {
    use KeyStatus::*;
    store.create_first(&rec("userData", 1, 1)).await.unwrap();
    rotate_once(&*store, "userData").await;
    let g0 = store.generation().await.unwrap();
    assert_eq!(
        store
            .set_status(&change(1, &[Rotating, Deprecated], Revoked, 100))
            .await
            .unwrap(),
        StatusOutcome::Changed
    );
    assert!(store.generation().await.unwrap() > g0, "generation bumped");
    let r = stored(&*store, "userData", 1).await;
    assert_eq!((r.status, r.status_changed_at), (Revoked, 100));
    assert_eq!(r.revoked_reason.as_deref(), Some("laptop stolen"));
    assert!(r.wrapped_key.is_some(), "revocation keeps the material");
    // Wrong state: nothing changes.
    assert_eq!(
        store
            .set_status(&change(1, &[Rotating, Deprecated], Revoked, 200))
            .await
            .unwrap(),
        StatusOutcome::WrongState(Revoked)
    );
    assert_eq!(
        store
            .set_status(&change(2, &[Rotating, Deprecated], Revoked, 200))
            .await
            .unwrap(),
        StatusOutcome::WrongState(Active),
        "the active version cannot be revoked"
    );
    assert_eq!(
        store
            .set_status(&change(9, &[Rotating], Revoked, 200))
            .await
            .unwrap(),
        StatusOutcome::NotFound
    );
    assert!(
        store
            .set_status(&change(1, &[Revoked], Active, 200))
            .await
            .is_err(),
        "nothing becomes active except by rotation"
    );
    // Reinstate clears the reason; revoke again; destroy erases the material.
    let mut reinstate = change(1, &[Revoked], Deprecated, 300);
    reinstate.reason = None;
    assert_eq!(
        store.set_status(&reinstate).await.unwrap(),
        StatusOutcome::Changed
    );
    let r = stored(&*store, "userData", 1).await;
    assert_eq!((r.status, r.revoked_reason), (Deprecated, None));
    store
        .set_status(&change(1, &[Rotating, Deprecated], Revoked, 400))
        .await
        .unwrap();
    assert_eq!(
        store
            .set_status(&change(1, &[Revoked], Destroyed, 500))
            .await
            .unwrap(),
        StatusOutcome::Changed
    );
    let r = stored(&*store, "userData", 1).await;
    assert_eq!(r.status, Destroyed);
    assert_eq!(r.wrapped_key, None, "destroyed: material erased");
    assert_eq!(r.revoked_reason.as_deref(), Some("laptop stolen"));
    // The number is never reused: the next rotation makes version 3.
    assert_eq!(rotate_once(&*store, "userData").await, 3);
}

/// Restore inserts are all-or-nothing.
pub async fn insert_versions(store: Arc<dyn Keystore>) {
    let mut one = rec("restored", 1, 1);
    one.status = KeyStatus::Rotating;
    one.encryptions = 77;
    let two = rec("restored", 2, 2);
    assert_eq!(
        store
            .insert_versions(&[one.clone(), two.clone()])
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        store.get_version(&p("restored"), v(1)).await.unwrap(),
        Some(one.clone()),
        "inserted exactly"
    );
    let three = rec("restored", 3, 3);
    let mut three_rot = three.clone();
    three_rot.status = KeyStatus::Rotating;
    for batch in [
        // One existing row among new ones: nothing of the batch is written.
        vec![three_rot, two.clone()],
        // A second active version: refused, nothing written.
        vec![three],
    ] {
        assert_eq!(
            store.insert_versions(&batch).await.unwrap(),
            WriteOutcome::Conflict
        );
        assert_absent(&*store, "restored", 3).await;
    }
}

/// KEK rewrap moves every version and the metadata together, or nothing.
pub async fn rewrap_all(store: Arc<dyn Keystore>) {
    store.init_meta("kek_id", "kek-1").await.unwrap();
    store.create_first(&rec("a", 1, 1)).await.unwrap();
    rotate_once(&*store, "a").await;
    store.create_first(&rec("b", 1, 1)).await.unwrap();
    let new = |purpose: &str, version: u32| RewrappedKey {
        purpose: p(purpose),
        version: v(version),
        wrapped_key: vec![0xEE; 60],
    };
    let new_kek =
        keyflow_kms::keyflow_core::kek::Kek::generate(&keyflow_kms::keyflow_core::OsRng).unwrap();
    let new_rows = keyflow_kms::row_mac::RowSealer::new(&new_kek).unwrap();
    // Incomplete list: b:v1 would be left under the old KEK.
    assert_eq!(
        store
            .rewrap_all(
                "kek_id",
                "kek-1",
                "kek-2",
                &[new("a", 1), new("a", 2)],
                &new_rows
            )
            .await
            .unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        store.get_meta("kek_id").await.unwrap().as_deref(),
        Some("kek-1")
    );
    let a1 = store.get_version(&p("a"), v(1)).await.unwrap().unwrap();
    assert_eq!(a1.kek_id, "kek-1", "conflict: nothing rewrapped");
    assert_ne!(a1.wrapped_key, Some(vec![0xEE; 60]));
    // Wrong expected KEK.
    let all = [new("a", 1), new("a", 2), new("b", 1)];
    assert_eq!(
        store
            .rewrap_all("kek_id", "kek-0", "kek-2", &all, &new_rows)
            .await
            .unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        store
            .rewrap_all("kek_id", "kek-1", "kek-2", &all, &new_rows)
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    // The rows are sealed under the new KEK's key from now on (the caller installs it).
    store.install_row_sealer(std::sync::Arc::new(new_rows));
    assert_eq!(
        store.get_meta("kek_id").await.unwrap().as_deref(),
        Some("kek-2")
    );
    // A process still holding the old KEK can no longer add versions under it.
    let mut stale = rec("c", 1, 1);
    stale.kek_id = "kek-1".into();
    assert!(
        store.create_first(&stale).await.is_err(),
        "a version under a rotated-away KEK is refused"
    );
    let mut stale_next = rec("b", 2, 2);
    stale_next.kek_id = "kek-1".into();
    assert!(store.rotate(&stale_next, 2).await.is_err());
    assert!(store.insert_versions(&[stale]).await.is_err());
    let mut current = rec("c", 1, 1);
    current.kek_id = "kek-2".into();
    assert_eq!(
        store.create_first(&current).await.unwrap(),
        keyflow_kms::keystore::CreateOutcome::Created
    );
    for (purpose, version) in [("a", 1), ("a", 2), ("b", 1)] {
        let r = store
            .get_version(&p(purpose), v(version))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.kek_id, "kek-2");
        assert_eq!(r.wrapped_key, Some(vec![0xEE; 60]));
    }
}

/// A lease has one holder at a time; it can be renewed, released and taken over
/// once expired.
pub async fn leases(store: Arc<dyn Keystore>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.try_lease("scheduler", &format!("holder-{i}"), 1000, 5000)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one concurrent lease taker wins");
    // Find the holder: it can renew, the others cannot take it before expiry.
    let mut holder = None;
    for i in 0..8 {
        let h = format!("holder-{i}");
        if store.try_lease("scheduler", &h, 2000, 5000).await.unwrap() {
            holder = Some(h);
        }
    }
    let holder = holder.expect("the winner renews");
    assert!(!store
        .try_lease("scheduler", "other", 6999, 5000)
        .await
        .unwrap());
    assert!(
        store
            .try_lease("scheduler", "other", 7000, 5000)
            .await
            .unwrap(),
        "an expired lease is taken over"
    );
    assert!(!store
        .try_lease("scheduler", &holder, 7001, 5000)
        .await
        .unwrap());
    store.release_lease("scheduler", &holder).await.unwrap(); // not the holder: no-op
    assert!(!store
        .try_lease("scheduler", &holder, 7002, 5000)
        .await
        .unwrap());
    store.release_lease("scheduler", "other").await.unwrap();
    assert!(store
        .try_lease("scheduler", &holder, 7003, 5000)
        .await
        .unwrap());
    // Leases are independent by name.
    assert!(store
        .try_lease("other-job", "other", 7003, 5000)
        .await
        .unwrap());
}

/// The generation changes with every key change, and only then.
pub async fn generation(store: Arc<dyn Keystore>) {
    let g0 = store.generation().await.unwrap();
    store.create_first(&rec("g", 1, 1)).await.unwrap();
    let g1 = store.generation().await.unwrap();
    assert_ne!(g1, g0, "create bumps");
    store.add_usage(&p("g"), v(1), 5).await.unwrap();
    store.get_version(&p("g"), v(1)).await.unwrap();
    assert_eq!(
        store.generation().await.unwrap(),
        g1,
        "reads and usage do not"
    );
    rotate_once(&*store, "g").await;
    let g2 = store.generation().await.unwrap();
    assert_ne!(g2, g1, "rotate bumps");
}
