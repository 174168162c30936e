//! `reencrypt --from-legacy` at the engine level, over an SQLite table: a column of
//! legacy packages and a JSON column of field documents are converted in place,
//! values KeyFlow already wrote are kept, a bad value fails alone, and a second run
//! writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::path::PathBuf;
use std::str::FromStr;

use keyflow_fields::{decrypt_fields, Binding};
use keyflow_kms::{Context, Decrypted, Purpose, ServiceConfig};
use keyflow_legacy::import::import;
use keyflow_legacy::keys::parse_key_documents;
use keyflow_legacy::reencrypt::{Column, FromLegacy};
use keyflow_legacy::{envelope, LegacyKek, LegacyKeyring};
use keyflow_reencrypt::{
    backend, engine, ContextSpec, NoProgress, Operation, RunOptions, TableSpec,
};
use keyflow_testkit::Env;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

fn vector(file: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/vectors-100k");
    std::fs::read_to_string(dir.join(file)).unwrap()
}

async fn table(url: &str, values: &[String]) {
    let opts = SqliteConnectOptions::from_str(url)
        .unwrap()
        .create_if_missing(true);
    let mut c = SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .execute(&mut c)
        .await
        .unwrap();
    for (i, v) in values.iter().enumerate() {
        sqlx::query("INSERT INTO t (id, v) VALUES (?1, ?2)")
            .bind(i as i64 + 1)
            .bind(v)
            .execute(&mut c)
            .await
            .unwrap();
    }
    c.close().await.unwrap();
}

async fn column(url: &str) -> Vec<String> {
    let opts = SqliteConnectOptions::from_str(url).unwrap();
    let mut c = SqliteConnection::connect_with(&opts).await.unwrap();
    let rows = sqlx::query("SELECT v FROM t ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<String, _>("v")).collect()
}

#[tokio::test]
async fn packages_and_field_documents_convert_in_place_once() {
    let env = Env::new();
    let svc = env.service(ServiceConfig::default()).await;
    let (kek, _) = LegacyKek::open(
        &vector("master.kek"),
        b"legacy-dev100k-kek-password-with-enough-length-0001",
        &envelope::counts(None),
    )
    .unwrap();
    import(
        &svc,
        &kek,
        vec![parse_key_documents(&vector("encryptionkeys.jsonl"), "keys")],
        false,
    )
    .await
    .unwrap();
    let ring = LegacyKeyring::load(&svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Packages, one value KeyFlow wrote, and one that is neither.
    let packages: Vec<Value> = serde_json::from_str(&vector("packages.json")).unwrap();
    let kf = svc
        .encrypt_value(
            &"kept".into(),
            &Purpose::new("userData").unwrap(),
            &Context::new(),
        )
        .await
        .unwrap();
    let mut values: Vec<String> = packages
        .iter()
        .map(|p| p["encryptedData"].as_str().unwrap().to_owned())
        .collect();
    values.push(kf.clone());
    values.push("garbage".into());
    let url = format!("sqlite:{}", dir.path().join("p.db").display());
    table(&url, &values).await;
    let spec = TableSpec::new("t", "v", "id").unwrap();
    let db = backend::connect(&url, &spec).await.unwrap();
    let opts = RunOptions::new(Operation::FromLegacy);
    let mut t = FromLegacy::new(&svc, &ring, Column::Packages, ContextSpec::default());
    let dry = engine::run(
        &*db,
        &mut t,
        &RunOptions {
            dry_run: true,
            ..opts.clone()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(dry.census.rewritten as usize, packages.len());
    assert_eq!(column(&url).await, values, "a dry run writes nothing");
    let first = engine::run(&*db, &mut t, &opts, &NoProgress).await.unwrap();
    assert_eq!(first.census.rewritten as usize, packages.len());
    assert_eq!(first.census.unchanged, 1);
    assert_eq!(first.census.failed_total(), 1);
    let after = column(&url).await;
    assert_eq!(after[packages.len()], kf);
    for (p, ct) in packages.iter().zip(&after) {
        let want = keyflow_legacy::package::typed_value(
            p["expectedPlaintext"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
        assert!(
            matches!(svc.decrypt(ct, &Context::new()).await.unwrap(), Decrypted::Json(v) if v == want)
        );
    }
    let second = engine::run(&*db, &mut t, &opts, &NoProgress).await.unwrap();
    assert_eq!(second.census.rewritten, 0);

    // Field documents in a JSON column, bound to the row id.
    let docs: Vec<Value> = serde_json::from_str(&vector("field-documents.json")).unwrap();
    let values: Vec<String> = docs.iter().map(|d| d["document"].to_string()).collect();
    let url = format!("sqlite:{}", dir.path().join("f.db").display());
    table(&url, &values).await;
    let db = backend::connect(&url, &spec).await.unwrap();
    let context = ContextSpec {
        id_key: Some("recordId".into()),
        ..ContextSpec::default()
    };
    let mut t = FromLegacy::new(&svc, &ring, Column::Fields, context);
    let run = engine::run(&*db, &mut t, &opts, &NoProgress).await.unwrap();
    assert_eq!(run.census.rewritten as usize, docs.len());
    for (i, (d, stored)) in docs.iter().zip(column(&url).await).enumerate() {
        let binding = Binding {
            doc_id: None,
            context: Context::from_pairs([("recordId", (i + 1).to_string().as_str())]).unwrap(),
        };
        let (plain, _) =
            decrypt_fields(&svc, serde_json::from_str(&stored).unwrap(), None, &binding)
                .await
                .unwrap();
        for (field, want) in d["expected"].as_object().unwrap() {
            assert_eq!(&plain[field], want);
        }
    }
    assert_eq!(
        engine::run(&*db, &mut t, &opts, &NoProgress)
            .await
            .unwrap()
            .census
            .rewritten,
        0
    );
}
