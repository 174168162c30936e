//! Unknown token ids: a token created elsewhere works at once, and forged ids cost a
//! bounded number of token-table reads (issue 16; `keyflow_server::auth`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use keyflow_kms::keystore::Tokens;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyflow_kms::access::{self, Role};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{Keystore, ServiceConfig};
use keyflow_server::auth::TokenCache;
use keyflow_testkit::{Env, MemoryKeystore};

async fn setup() -> (Env, Arc<MemoryKeystore>, Arc<TokenCache>) {
    let env = Env::new();
    // The service installs the row sealer the keystore needs before it reads tokens.
    let _service = env.service(ServiceConfig::default()).await;
    let mem = env.memory_store().unwrap();
    let store: Arc<dyn Keystore> = mem.clone();
    let cache = Arc::new(TokenCache::new(store, Arc::new(SystemClock)));
    cache.refresh().await.unwrap();
    (env, mem, cache)
}

fn new_token() -> access::NewToken {
    access::generate(
        Role::Admin,
        vec![],
        "t".into(),
        SystemClock.now_millis(),
        None,
        &OsRng,
    )
    .unwrap()
}

fn bearer(t: &access::NewToken) -> String {
    format!("Bearer {}", t.token.as_str())
}

#[tokio::test]
async fn a_token_created_just_after_a_refresh_works_at_once() {
    let (_env, mem, cache) = setup().await;
    for _ in 0..3 {
        // The periodic refresh has just run; then `keyflow tokens create` elsewhere.
        cache.refresh().await.unwrap();
        let t = new_token();
        mem.insert_token(&t.record).await.unwrap();
        let who = cache.authenticate(Some(&bearer(&t))).await;
        assert!(who.is_ok(), "a new token was refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_forged_ids_share_one_read() {
    let (_env, mem, cache) = setup().await;
    let before = mem.token_reads();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (cache, header) = (cache.clone(), bearer(&new_token()));
            tokio::spawn(async move { cache.authenticate(Some(&header)).await.is_err() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap(), "a forged id was accepted");
    }
    let reads = mem.token_reads() - before;
    assert!(
        (1..=3).contains(&reads),
        "{reads} token-table reads for 200 forged ids"
    );
}

#[tokio::test]
async fn sequential_forged_ids_are_rate_limited() {
    let (_env, mem, cache) = setup().await;
    let before = mem.token_reads();
    let start = Instant::now();
    for _ in 0..3 {
        assert!(cache
            .authenticate(Some(&bearer(&new_token())))
            .await
            .is_err());
    }
    assert_eq!(
        mem.token_reads() - before,
        3,
        "one read each: none is trusted stale"
    );
    // Each read waited for the 250 ms gap after the previous one.
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}
