//! The engine against real databases: SQLite always, PostgreSQL when
//! `TEST_DATABASE_URL` is set (each case runs on both through `on_both!`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{version_of, Db, Env};
use keyflow_kms::{Context, Purpose};
use keyflow_reencrypt::{
    backend, engine, Backend, ContextSpec, EncryptPlaintext, Error, NoProgress, Operation, Outcome,
    Report, Rewrap, RowId, RunOptions, TableSpec, ValueTransform,
};
use keyflow_testkit::postgres::with_database;

const N: i64 = 1200;

fn plain(i: i64) -> String {
    format!("123-45-{i:04}")
}

fn options(op: Operation, batch: usize) -> RunOptions {
    RunOptions {
        batch,
        ..RunOptions::new(op)
    }
}

/// One run of `t` over `target` in batches of `batch`, which must succeed.
async fn run_ok(
    target: &dyn Backend,
    t: &mut dyn ValueTransform,
    op: Operation,
    batch: usize,
) -> Report {
    engine::run(target, t, &options(op, batch), &NoProgress)
        .await
        .unwrap()
}

/// N rows encrypted under userData v1 (row 7 is NULL), then a rotation to v2.
async fn rotated_table(env: &Env, db: &Db) -> Vec<(i64, Option<String>)> {
    db.create().await;
    let ctx = Context::new();
    let mut rows = Vec::new();
    for i in 1..=N {
        let v = if i == 7 {
            None
        } else {
            Some(env.encrypt("userData", &plain(i), &ctx).await)
        };
        rows.push((i, v));
    }
    db.insert(&rows).await;
    env.rotate("userData").await;
    rows
}

async fn reencrypt(env: &Env, db: &Db, batch: usize) -> Report {
    let spec = TableSpec::new(&db.table, "val", "id").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let mut t = Rewrap::new(&env.service, ContextSpec::default());
    run_ok(&*target, &mut t, Operation::Reencrypt, batch).await
}

/// Every non-NULL row is under v2 and decrypts to its original plaintext.
async fn assert_all_current(env: &Env, db: &Db) {
    for (id, v) in db.all().await {
        let Some(ct) = v else {
            assert_eq!(id, 7);
            continue;
        };
        assert_eq!(version_of(&ct), 2, "row {id}");
        assert_eq!(
            env.decrypt(&ct, &Context::new()).await,
            plain(id),
            "row {id}"
        );
    }
}

macro_rules! on_both {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let env = super::Env::new().await;
                let db = super::Db::sqlite(env.dir.path()).await;
                super::$case(&env, &db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                // A throwaway database (dropped afterwards); without TEST_DATABASE_URL
                // a visible SKIPPED notice.
                super::with_database(stringify!($case), |_, url| async move {
                    let db = super::Db::postgres(&url).await;
                    let env = super::Env::new().await;
                    super::$case(&env, &db).await;
                })
                .await;
            }
        }
    };
}

on_both!(rotation_rewrites_every_row_and_second_run_is_a_no_op);
async fn rotation_rewrites_every_row_and_second_run_is_a_no_op(env: &Env, db: &Db) {
    rotated_table(env, db).await;
    let r = reencrypt(env, db, 100).await;
    let c = &r.census;
    assert_eq!(
        (c.rows, c.rewritten, c.unchanged),
        (N as u64, N as u64 - 1, 0)
    );
    assert_eq!(c.skipped["null"], 1);
    assert_eq!(c.failed_total(), 0);
    assert_eq!(c.by_key_version.len(), 1);
    assert_eq!(c.by_key_version["userData:v2"], N as u64 - 1);
    assert_eq!(r.batches_written, 12);
    assert_all_current(env, db).await;
    assert_eq!(
        db.checkpoints().await,
        0,
        "a finished run leaves no checkpoint"
    );

    let before = db.all().await;
    let again = reencrypt(env, db, 100).await;
    assert_eq!(db.all().await, before, "second run changed nothing");
    assert_eq!(again.census.rewritten, 0);
    assert_eq!(again.census.unchanged, N as u64 - 1);
    assert_eq!(again.batches_written, 0, "a no-op run writes nothing");
    assert_eq!(again.census.by_key_version["userData:v2"], N as u64 - 1);
}

on_both!(dry_run_writes_nothing);
async fn dry_run_writes_nothing(env: &Env, db: &Db) {
    let rows = rotated_table(env, db).await;
    let spec = TableSpec::new(&db.table, "val", "id").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let mut t = Rewrap::new(&env.service, ContextSpec::default());
    let opts = RunOptions {
        dry_run: true,
        ..options(Operation::Reencrypt, 100)
    };
    let r = engine::run(&*target, &mut t, &opts, &NoProgress)
        .await
        .unwrap();
    assert!(r.dry_run);
    assert_eq!(r.census.rewritten, N as u64 - 1, "would rewrite");
    assert_eq!(r.census.by_key_version["userData:v2"], N as u64 - 1);
    assert_eq!(db.all().await, rows, "nothing written");
    assert_eq!(db.checkpoints().await, 0);
}

/// Fails the run (as a crash would) after `limit` rows.
struct StopAfter<'a> {
    inner: Rewrap<'a>,
    seen: usize,
    limit: usize,
}

#[async_trait]
impl ValueTransform for StopAfter<'_> {
    async fn transform(
        &mut self,
        id: &RowId,
        value: &str,
        dry: bool,
    ) -> keyflow_reencrypt::Result<Outcome> {
        self.seen += 1;
        if self.seen > self.limit {
            return Err(Error::Schema("simulated crash".into()));
        }
        self.inner.transform(id, value, dry).await
    }
}

on_both!(interrupted_run_resumes_from_its_checkpoint);
async fn interrupted_run_resumes_from_its_checkpoint(env: &Env, db: &Db) {
    rotated_table(env, db).await;
    let spec = TableSpec::new(&db.table, "val", "id").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let mut t = StopAfter {
        inner: Rewrap::new(&env.service, ContextSpec::default()),
        seen: 0,
        limit: 450,
    };
    let err = engine::run(
        &*target,
        &mut t,
        &options(Operation::Reencrypt, 100),
        &NoProgress,
    )
    .await;
    assert!(err.is_err());
    assert_eq!(db.checkpoints().await, 1);
    let rows = db.all().await;
    let done = rows
        .iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|v| version_of(v) == 2))
        .count();
    assert_eq!(
        done, 399,
        "four committed batches (row 7 is NULL), the fifth rolled back"
    );

    let r = reencrypt(env, db, 100).await;
    assert_eq!(r.resumed_after, Some(RowId::Int(400)));
    assert_eq!(r.census.rows, N as u64, "the census covers the whole table");
    assert_eq!(r.census.rewritten, N as u64 - 1);
    assert_all_current(env, db).await;
    assert_eq!(db.checkpoints().await, 0);
}

/// Simulates the application writing a row between the engine's read and its write.
struct WritesBehindTheEngine<'a> {
    inner: Rewrap<'a>,
    env: &'a Env,
    db: &'a Db,
    written: HashMap<i64, String>,
}

#[async_trait]
impl ValueTransform for WritesBehindTheEngine<'_> {
    async fn transform(
        &mut self,
        id: &RowId,
        value: &str,
        dry: bool,
    ) -> keyflow_reencrypt::Result<Outcome> {
        let out = self.inner.transform(id, value, dry).await?;
        if let RowId::Int(i) = id {
            if i % 7 == 3 {
                let ct = self
                    .env
                    .encrypt("userData", &format!("app-{i}"), &Context::new())
                    .await;
                self.db.set(*i, &ct).await;
                self.written.insert(*i, ct);
            }
        }
        Ok(out)
    }
}

on_both!(application_write_between_read_and_update_is_kept);
async fn application_write_between_read_and_update_is_kept(env: &Env, db: &Db) {
    rotated_table(env, db).await;
    let spec = TableSpec::new(&db.table, "val", "id").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let mut t = WritesBehindTheEngine {
        inner: Rewrap::new(&env.service, ContextSpec::default()),
        env,
        db,
        written: HashMap::new(),
    };
    let r = run_ok(&*target, &mut t, Operation::Reencrypt, 100).await;
    let lost = t.written.len() as u64;
    assert!(lost > 100);
    assert_eq!(
        r.census.skipped["changed concurrently (application write kept)"],
        lost
    );
    assert_eq!(r.census.rewritten, N as u64 - 1 - lost);
    for (id, v) in db.all().await {
        let Some(ct) = v else { continue };
        assert_eq!(version_of(&ct), 2);
        match t.written.get(&id) {
            Some(app) => assert_eq!(&ct, app, "row {id}: the application's write survived"),
            None => assert_eq!(env.decrypt(&ct, &Context::new()).await, plain(id)),
        }
    }
}

on_both!(concurrent_writer_loses_nothing);
async fn concurrent_writer_loses_nothing(env: &Env, db: &Db) {
    rotated_table(env, db).await;
    let stop = Arc::new(AtomicBool::new(false));
    let finals: Arc<Mutex<HashMap<i64, String>>> = Arc::default();
    // The application: keeps rewriting rows (under the active version) until told to stop.
    let writer = {
        let (stop, finals, service) = (stop.clone(), finals.clone(), env.service.clone());
        let writer_db = Db {
            url: db.url.clone(),
            pool: db.pool.clone(),
            table: db.table.clone(),
        };
        tokio::spawn(async move {
            let purpose = Purpose::new("userData").unwrap();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = (n * 37) % N + 1;
                let v = serde_json::Value::String(format!("app-{id}-{n}"));
                let ct = service
                    .encrypt_value(&v, &purpose, &Context::new())
                    .await
                    .unwrap();
                writer_db.set(id, &ct).await;
                finals.lock().unwrap().insert(id, ct);
                tokio::task::yield_now().await;
            }
            n
        })
    };
    let r = reencrypt(env, db, 50).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 0);
    assert_eq!(r.census.failed_total(), 0);
    let finals = finals.lock().unwrap().clone();
    for (id, v) in db.all().await {
        let Some(ct) = v else { continue };
        match finals.get(&id) {
            Some(app) => assert_eq!(&ct, app, "row {id}: the application's last write survived"),
            None => {
                assert_eq!(version_of(&ct), 2, "row {id}");
                assert_eq!(env.decrypt(&ct, &Context::new()).await, plain(id));
            }
        }
    }
}

on_both!(undecryptable_rows_are_reported_and_left_untouched);
async fn undecryptable_rows_are_reported_and_left_untouched(env: &Env, db: &Db) {
    db.create().await;
    let ok = env.encrypt("userData", "fine", &Context::new()).await;
    let other_ctx = Context::from_pairs([("recordId", "r-9")]).unwrap();
    let wrong_ctx = env.encrypt("userData", "bound elsewhere", &other_ctx).await;
    let rows = vec![
        (1, Some(ok)),
        (2, Some("not encrypted at all".to_owned())),
        (3, Some("kf1:AAAA".to_owned())),
        (4, Some(wrong_ctx.clone())),
    ];
    db.insert(&rows).await;
    env.rotate("userData").await;
    let r = reencrypt(env, db, 100).await;
    let c = &r.census;
    assert_eq!(c.rewritten, 1);
    assert_eq!(c.failed_total(), 3);
    assert_eq!(c.failed["not a KeyFlow ciphertext"], 2);
    let ids: Vec<&str> = c.failed_rows.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["2", "3", "4"]);
    let census_json = serde_json::to_string(c).unwrap();
    assert!(
        !census_json.contains("not encrypted at all") && !census_json.contains("bound elsewhere")
    );
    let after = db.all().await;
    assert_eq!(&after[1..], &rows[1..], "failed rows untouched");
    assert_eq!(version_of(after[0].1.as_deref().unwrap()), 2);
}

on_both!(migrate_encrypts_plaintext_and_skips_ciphertexts);
async fn migrate_encrypts_plaintext_and_skips_ciphertexts(env: &Env, db: &Db) {
    db.create().await;
    let existing = env.encrypt("userData", "already", &Context::new()).await;
    let mut rows: Vec<(i64, Option<String>)> = (1..=300).map(|i| (i, Some(plain(i)))).collect();
    rows.push((301, Some(existing.clone())));
    rows.push((302, None));
    rows.push((303, Some("kf1:looks-like-but-is-not".into())));
    db.insert(&rows).await;

    let spec = TableSpec::new(&db.table, "val", "id").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let purpose = Purpose::new("userData").unwrap();
    let mut t = EncryptPlaintext::new(&env.service, purpose.clone(), ContextSpec::default(), false);
    let r = run_ok(&*target, &mut t, Operation::Migrate, 64).await;
    assert_eq!(r.census.rewritten, 301, "300 plaintexts + one look-alike");
    assert_eq!(r.census.unchanged, 1);
    assert_eq!(r.census.by_key_version["userData:v1"], 302);
    let after = db.all().await;
    assert_eq!(
        after[300].1.as_deref(),
        Some(existing.as_str()),
        "ciphertext kept as is"
    );
    assert_eq!(after[301].1, None);
    for (id, v) in &after[..300] {
        assert_eq!(
            env.decrypt(v.as_deref().unwrap(), &Context::new()).await,
            plain(*id)
        );
    }
    assert_eq!(
        env.decrypt(after[302].1.as_deref().unwrap(), &Context::new())
            .await,
        "kf1:looks-like-but-is-not"
    );

    let mut t = EncryptPlaintext::new(&env.service, purpose, ContextSpec::default(), false);
    let again = run_ok(&*target, &mut t, Operation::Migrate, 64).await;
    assert_eq!(again.census.rewritten, 0);
    assert_eq!(db.all().await, after, "second migration is a no-op");
}

on_both!(context_from_row_id);
async fn context_from_row_id(env: &Env, db: &Db) {
    db.create().await;
    let mut rows = Vec::new();
    for i in 1..=50 {
        let ctx = Context::from_pairs([("tenant", "t1"), ("recordId", &i.to_string())]).unwrap();
        rows.push((i, Some(env.encrypt("userData", &plain(i), &ctx).await)));
    }
    db.insert(&rows).await;
    env.rotate("userData").await;
    let spec = TableSpec::new(&db.table, "val", "id").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let context = ContextSpec {
        fixed: Context::from_pairs([("tenant", "t1")]).unwrap(),
        id_key: Some("recordId".into()),
    };
    let mut t = Rewrap::new(&env.service, context);
    let r = run_ok(&*target, &mut t, Operation::Reencrypt, 16).await;
    assert_eq!(r.census.rewritten, 50);
    for (id, v) in db.all().await {
        let ctx = Context::from_pairs([("tenant", "t1"), ("recordId", &id.to_string())]).unwrap();
        let ct = v.unwrap();
        assert_eq!(version_of(&ct), 2);
        assert_eq!(env.decrypt(&ct, &ctx).await, plain(id));
    }
}

on_both!(bad_names_and_missing_tables_are_refused);
async fn bad_names_and_missing_tables_are_refused(_env: &Env, db: &Db) {
    for (t, c, id) in [
        ("users; DROP TABLE x", "val", "id"),
        ("users", "val\"--", "id"),
        ("users", "val", "id or 1=1"),
        ("keyflow_reencrypt_checkpoint", "state", "table_name"),
        ("", "val", "id"),
    ] {
        let e = TableSpec::new(t, c, id).unwrap_err();
        assert!(matches!(e, Error::InvalidIdentifier { .. }), "{e}");
        assert!(e.is_usage());
    }
    db.create().await;
    let missing = TableSpec::new("no_such_table_here", "val", "id").unwrap();
    let e = backend::connect(&db.url, &missing).await.unwrap_err();
    assert!(matches!(e, Error::Schema(_)), "{e}");
    let wrong_col = TableSpec::new(&db.table, "nope", "id").unwrap();
    let e = backend::connect(&db.url, &wrong_col).await.unwrap_err();
    assert!(e.to_string().contains("column 'nope' not found"), "{e}");
    let e = backend::connect("mysql://x", &wrong_col).await.unwrap_err();
    assert!(matches!(e, Error::UnsupportedUrl(_)), "{e}");
}

#[tokio::test]
async fn text_ids_page_in_order() {
    let env = Env::new().await;
    let db = Db::sqlite(env.dir.path()).await;
    db.exec("CREATE TABLE accounts (code TEXT PRIMARY KEY, iban TEXT)")
        .await;
    let mut expected = HashMap::new();
    for i in 0..230 {
        let code = format!("acct-{i:05}");
        let ct = env
            .encrypt("financialData", &plain(i), &Context::new())
            .await;
        let common::Pool::Sqlite(p) = &db.pool else {
            unreachable!()
        };
        sqlx::query("INSERT INTO accounts VALUES (?1, ?2)")
            .bind(&code)
            .bind(&ct)
            .execute(p)
            .await
            .unwrap();
        expected.insert(code, plain(i));
    }
    env.rotate("financialData").await;
    let spec = TableSpec::new("accounts", "iban", "code").unwrap();
    let target = backend::connect(&db.url, &spec).await.unwrap();
    let mut t = Rewrap::new(&env.service, ContextSpec::default());
    let r = run_ok(&*target, &mut t, Operation::Reencrypt, 40).await;
    assert_eq!(r.census.rewritten, 230);
    let common::Pool::Sqlite(p) = &db.pool else {
        unreachable!()
    };
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT code, iban FROM accounts")
        .fetch_all(p)
        .await
        .unwrap();
    for (code, ct) in rows {
        assert_eq!(version_of(&ct), 2);
        assert_eq!(env.decrypt(&ct, &Context::new()).await, expected[&code]);
    }
}
