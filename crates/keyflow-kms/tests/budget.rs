//! The AES-GCM usage budget — min(policy `max_encryptions`, 2^32) per key version — is
//! enforced where the key is chosen, with no scheduler running: a version is rotated
//! (compare-and-set) before it would exceed it, whichever entry point encrypts, and
//! however many instances share the keystore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::Arc;

use common::Env;
use keyflow_core::clock::ManualClock;
use keyflow_core::{Context, KeyVersion};
use keyflow_kms::model::MAX_ENCRYPTIONS_PER_KEY;
use keyflow_kms::{EncryptionService, Policy, ServiceConfig, VersionFilter};
use keyflow_testkit::env::purpose;
use serde_json::json;

fn small_blocks() -> ServiceConfig {
    ServiceConfig {
        usage_flush_every: 4,
        ..Default::default()
    }
}

/// Generates `p`'s first version and caps its policy budget at `max` encryptions.
async fn with_budget(s: &EncryptionService, p: &keyflow_core::Purpose, max: u64) {
    s.keys().generate(p).await.unwrap();
    s.keys()
        .set_policy(
            p,
            &Policy {
                max_encryptions: max,
                ..Policy::default()
            },
        )
        .await
        .unwrap();
}

fn version_of(ct: &str) -> u32 {
    EncryptionService::summary(ct).unwrap().key_version
}

async fn counts(s: &EncryptionService) -> Vec<(u32, u64)> {
    s.ring().flush_usage().await.unwrap();
    s.keys()
        .list(&VersionFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.version.get(), r.encryptions))
        .collect()
}

/// What the keystore counts for `p`'s first version: used plus reserved.
async fn stored(s: &EncryptionService, p: &keyflow_core::Purpose) -> u64 {
    s.ring()
        .keystore()
        .get_version(p, KeyVersion::FIRST)
        .await
        .unwrap()
        .unwrap()
        .encryptions
}

#[tokio::test]
async fn a_version_is_never_used_past_its_policy_budget() {
    let env = Env::new();
    let s = env.service(small_blocks()).await;
    let p = purpose("userData");
    with_budget(&s, &p, 5).await;
    let mut versions = Vec::new();
    for i in 0..5 {
        let ct = s
            .encrypt_value(&json!(i), &p, &Context::new())
            .await
            .unwrap();
        versions.push(version_of(&ct));
    }
    assert_eq!(versions, [1; 5], "the budget's five encryptions");
    // The sixth would exceed it: v1 is rotated first, and v2 seals it.
    let ct = s
        .encrypt_value(&json!(6), &p, &Context::new())
        .await
        .unwrap();
    assert_eq!(version_of(&ct), 2);
    assert_eq!(counts(&s).await, [(1, 5), (2, 1)]);
    // Old ciphertexts still decrypt (v1 is rotating, not gone).
    assert!(matches!(
        s.decrypt(&ct, &Context::new()).await.unwrap(),
        keyflow_kms::Decrypted::Json(v) if v == json!(6)
    ));
}

#[tokio::test]
async fn a_batch_that_would_cross_the_budget_goes_to_the_next_version_whole() {
    let env = Env::new();
    let s = env.service(small_blocks()).await;
    let p = purpose("financialData");
    with_budget(&s, &p, 5).await;
    for i in 0..4 {
        s.encrypt_value(&json!(i), &p, &Context::new())
            .await
            .unwrap();
    }
    // 4 used, 1 left: a batch of 3 does not fit and is sealed under v2, all of it.
    let out = s
        .encrypt_batch(&[json!(1), json!(2), json!(3)], &p, &Context::new())
        .await
        .unwrap();
    let versions: Vec<u32> = out
        .iter()
        .map(|r| version_of(r.as_ref().unwrap()))
        .collect();
    assert_eq!(versions, [2, 2, 2]);
    // Files and fields (with_active_key) and rewrap take from the same budget.
    s.ring().with_active_key(&p, |k| k.version()).await.unwrap();
    assert_eq!(counts(&s).await, [(1, 4), (2, 4)]);
}

/// A batch larger than a whole version's budget can never be sealed under one
/// version: it is refused at once (400 over HTTP), not retried through a string of
/// rotations that burn versions and end in "overloaded, retry later" (found by
/// Schemathesis, issue 16).
#[tokio::test]
async fn a_batch_larger_than_a_whole_version_budget_is_refused_without_rotating() {
    let env = Env::new();
    let s = env.service(small_blocks()).await;
    let p = purpose("healthData");
    with_budget(&s, &p, 2).await;
    let r = s
        .encrypt_batch(&[json!(1), json!(2), json!(3)], &p, &Context::new())
        .await;
    assert!(matches!(r, Err(keyflow_kms::KmsError::Invalid(_))), "{r:?}");
    let versions = s.keys().list(&VersionFilter::default()).await.unwrap();
    assert_eq!(versions.len(), 1, "no version burnt");
    // What fits still works.
    let out = s
        .encrypt_batch(&[json!(1), json!(2)], &p, &Context::new())
        .await
        .unwrap();
    assert!(out.iter().all(Result::is_ok));
}

#[tokio::test]
async fn two_instances_never_exceed_the_budget_together() {
    let env = Env::new();
    let a = Arc::new(env.service(small_blocks()).await);
    let b = Arc::new(env.service(small_blocks()).await);
    let p = purpose("userData");
    with_budget(&a, &p, 10).await;
    let mut under_v1 = 0;
    for i in 0..30 {
        let s = if i % 2 == 0 { &a } else { &b };
        let ct = s
            .encrypt_value(&json!(i), &p, &Context::new())
            .await
            .unwrap();
        if version_of(&ct) == 1 {
            under_v1 += 1;
        }
    }
    assert!(under_v1 <= 10, "{under_v1} encryptions under v1, budget 10");
    a.ring().flush_usage().await.unwrap();
    let all = counts(&b).await;
    assert!(all.iter().all(|(_, n)| *n <= 10), "{all:?}");
    assert_eq!(
        all.iter().map(|(_, n)| n).sum::<u64>(),
        30,
        "exact once given back"
    );
}

#[tokio::test]
async fn the_hard_gcm_limit_applies_whatever_the_count_says() {
    // A version whose stored count already reached 2^32 (e.g. a restored active
    // version, see tests/backup.rs) is never used again, whatever the policy.
    let env = Env::new();
    let s = env.service(small_blocks()).await;
    let p = purpose("userData");
    s.keys().generate(&p).await.unwrap();
    let store = s.ring().keystore().clone();
    let spent = i64::try_from(MAX_ENCRYPTIONS_PER_KEY).unwrap();
    store
        .adjust_usage(&p, KeyVersion::FIRST, spent)
        .await
        .unwrap();
    let ct = s
        .encrypt_value(&json!(1), &p, &Context::new())
        .await
        .unwrap();
    assert_eq!(version_of(&ct), 2);
    let v1 = store
        .get_version(&p, KeyVersion::FIRST)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        v1.encryptions, MAX_ENCRYPTIONS_PER_KEY,
        "the excess was given back"
    );
}

/// Servers reserve the next block in the background once a quarter of the current one
/// is left, so a request rarely waits for the keystore; the budget still holds.
#[tokio::test]
async fn servers_reserve_ahead_without_crossing_the_budget() {
    let env = Env::new();
    let s = env
        .service(ServiceConfig {
            usage_flush_every: 4,
            background_usage_flush: true,
            ..Default::default()
        })
        .await;
    let p = purpose("userData");
    with_budget(&s, &p, 6).await;
    // One block of 4 reserved inline, three used: a quarter (1) left, so the third use
    // starts the next reservation in the background (this runtime runs it on yield).
    for i in 0..3 {
        s.encrypt_value(&json!(i), &p, &Context::new())
            .await
            .unwrap();
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        stored(&s, &p).await,
        6,
        "4 + the 2 the budget allows of the next block"
    );
    // 1 + 2 left: three more under v1, then v2.
    let versions: Vec<u32> = {
        let mut v = Vec::new();
        for i in 0..4 {
            let ct = s
                .encrypt_value(&json!(i), &p, &Context::new())
                .await
                .unwrap();
            v.push(version_of(&ct));
        }
        v
    };
    assert_eq!(versions, [1, 1, 1, 2]);
    assert_eq!(counts(&s).await, [(1, 6), (2, 1)]);
}

/// A server that encrypts fast reserves larger blocks ahead (fewer keystore writes), but
/// never more than a 64th of the version's budget at once, and its counts stay exact
/// once flushed.
#[tokio::test]
async fn fast_servers_reserve_larger_blocks_within_a_share_of_the_budget() {
    let env = Env::new();
    let store = env.store().await;
    let kek = env.init(&*store).await;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let s = EncryptionService::new(
        store,
        kek,
        ServiceConfig {
            usage_flush_every: 4,
            background_usage_flush: true,
            ..Default::default()
        },
    )
    .with_clock(clock.clone());
    let p = purpose("userData");
    // A 64th of the budget: blocks of 4, 8, 16, 32, then 64 at most.
    with_budget(&s, &p, 64 * 64).await;
    let mut ahead = Vec::new();
    for i in 0..300u64 {
        s.encrypt_value(&json!(i), &p, &Context::new())
            .await
            .unwrap();
        // The clock stands still: every refill comes "fast".
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        ahead.push(stored(&s, &p).await - (i + 1));
    }
    let most = *ahead.iter().max().unwrap();
    // With a fixed block of 4 a server is never more than 5 ahead.
    assert!(
        most > 16,
        "the block grew past the configured 4 (at most {most} ahead)"
    );
    // A refill starts with a quarter of the last block left.
    assert!(
        most <= 64 + 64 / 4,
        "never more than a 64th of the budget reserved at once: {most} ahead"
    );
    assert_eq!(counts(&s).await, [(1, 300)], "exact once flushed");
}
