//! Discovery on PostgreSQL: catalog, paging by an integer key, a composite key, a text
//! key and `ctid`, JSON and JSONB columns, ciphertext-looking strings. Needs
//! `TEST_DATABASE_URL` (`scripts/test-postgres.sh up`); without it the test prints
//! `SKIPPED: …` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::future::Future;

use keyflow_discovery::{Error, NoProgress, ScanOptions, Target};
use keyflow_testkit::postgres::{with_database, TestDb};
use serde_json::json;

fn with_db<Fut>(test: &str, body: impl FnOnce(TestDb, String) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(with_database(test, body));
}

#[test]
fn postgres_tables_are_paged_by_key_and_counted() {
    with_db(
        "postgres_tables_are_paged_by_key_and_counted",
        |_db, url| async move {
            let target = Target::connect(&url).await.unwrap();
            let Target::Postgres(pool, _) = &target else {
                panic!("a postgres target")
            };
            sqlx::raw_sql(
            "CREATE TABLE customers (id bigint PRIMARY KEY, notes text, profile jsonb, age int);
             INSERT INTO customers
               SELECT i, CASE WHEN i % 100 = 0 THEN 'paid with 4532 0151 1283 0366 yesterday'
                              ELSE 'order ORD-' || i || ' at ' || (1700000000000 + i) END,
                      CASE WHEN i = 5 THEN '{\"contact\": {\"email\": \"ada@example.com\"}}'::jsonb END,
                      40
               FROM generate_series(1, 1050) AS i;
             CREATE TABLE lines (order_id int, line int, memo varchar(100), PRIMARY KEY (order_id, line));
             INSERT INTO lines SELECT i / 10, i % 10,
                      CASE WHEN i % 70 = 0 THEN 'call (415) 555-2671' ELSE 'ok' END
               FROM generate_series(0, 349) AS i;
             CREATE TABLE notes (body text, extra json);
             INSERT INTO notes SELECT 'ssn 123-45-6789', '[\"DE89 3704 0044 0532 0130 00\"]'::json
               FROM generate_series(1, 120);
             CREATE TABLE \"Mixed Case\" (code text PRIMARY KEY, v text);
             INSERT INTO \"Mixed Case\" SELECT 'k' || lpad(i::text, 4, '0'), 'x' FROM generate_series(1, 30) AS i;
             CREATE TABLE keyflow_reencrypt_checkpoint (state text);",
        )
        .execute(pool)
        .await
        .unwrap();

            let plan = target
                .plan(&ScanOptions {
                    tables: vec![],
                    page_size: 7,
                })
                .await
                .unwrap();
            let names: Vec<&str> = plan.tables.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["Mixed Case", "customers", "lines", "notes"]);
            let report = target.scan(&plan, &NoProgress).await.unwrap();
            assert_eq!(report.backend, "postgres");
            let per_table: Vec<(&str, u64)> = report
                .tables
                .iter()
                .map(|t| (t.table.as_str(), t.rows))
                .collect();
            assert_eq!(
                per_table,
                [
                    ("Mixed Case", 30),
                    ("customers", 1050),
                    ("lines", 350),
                    ("notes", 120)
                ]
            );
            assert_eq!(report.rows(), 1050 + 350 + 120 + 30);
            let findings: Vec<(String, String, String, u64)> = report
                .findings()
                .into_iter()
                .map(|f| (f.table, f.column, f.detector, f.count))
                .collect();
            let want = [
                ("customers", "notes", "pan", 10),
                ("customers", "profile", "email", 1),
                ("lines", "memo", "phone", 5),
                ("notes", "body", "ssn", 120),
                ("notes", "extra", "iban", 120),
            ];
            assert_eq!(
                findings,
                want.map(|(t, c, d, n)| (t.to_owned(), c.to_owned(), d.to_owned(), n))
            );
            assert_eq!(report.clear_values(), 256);
            let details = report.audit_details();
            assert_eq!(
                details["scope"],
                json!({"backend": "postgres", "tables": ["Mixed Case", "customers", "lines", "notes"]})
            );

            // --table, with a name that needs quoting; unknown and KeyFlow tables refused.
            let only = ScanOptions {
                tables: vec!["Mixed Case".into()],
                page_size: 4,
            };
            let report = target
                .scan(&target.plan(&only).await.unwrap(), &NoProgress)
                .await
                .unwrap();
            assert_eq!(report.rows(), 30);
            assert_eq!(report.clear_values(), 0);
            let missing = ScanOptions {
                tables: vec!["mixed case".into()],
                page_size: 4,
            };
            assert!(matches!(
                target.plan(&missing).await,
                Err(Error::NoSuchTable(_))
            ));
            let own = ScanOptions {
                tables: vec!["keyflow_reencrypt_checkpoint".into()],
                page_size: 4,
            };
            assert!(matches!(target.plan(&own).await, Err(Error::OwnTable(_))));
        },
    );
}

#[test]
fn postgres_connection_errors_hide_the_password() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(Target::connect("postgres://app:s3cr3t@127.0.0.1:1/app"))
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("postgres://app:***@127.0.0.1:1/app"),
        "{shown}"
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert_eq!(err.code(), "unavailable");
}
