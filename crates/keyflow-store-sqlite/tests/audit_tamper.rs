//! Tampering with the audit trail through SQL, as someone who can write the database
//! file but does not hold the KEK: each change is found by verification (scan, chain
//! verifier, stored head), which names the first bad record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use keyflow_keystore_contract::audit::{event, seal_after, sealer, verify};
use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainBreak, ChainHead, Source, StoredAudit,
};
use keyflow_kms::keyflow_core::to_hex;
use keyflow_store_sqlite::SqliteKeystore;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// A keystore holding six verified records, and a second, raw connection to its file.
struct Six {
    store: SqliteKeystore,
    raw: SqlitePool,
    sealer: AuditSealer,
    records: Vec<StoredAudit>,
    _dir: tempfile::TempDir,
}

async fn six() -> Six {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyflow.db");
    let store = SqliteKeystore::open(&path).await.unwrap();
    let sealer = sealer();
    let events: Vec<AuditEvent> = (1..=6).map(event).collect();
    store.append_audit(&sealer, &events[..2]).await.unwrap();
    store.append_audit(&sealer, &events[2..]).await.unwrap();
    let records = seal_after(&sealer, ChainHead::default(), &events);
    assert_eq!(verify(&store, &sealer, 4).await.unwrap().seq, 6);
    let raw = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    Six {
        store,
        raw,
        sealer,
        records,
        _dir: dir,
    }
}

impl Six {
    async fn sql(&self, sql: &str) -> u64 {
        sqlx::query(sql)
            .execute(&self.raw)
            .await
            .unwrap()
            .rows_affected()
    }

    async fn verify(&self) -> Result<ChainHead, ChainBreak> {
        verify(&self.store, &self.sealer, 4).await
    }

    /// Writes `r`'s columns into the row numbered `seq` (inserting it if `insert`).
    async fn put(&self, seq: u64, r: &StoredAudit, insert: bool) {
        let sql = if insert {
            "INSERT INTO keyflow_audit (kek_id, time, actor, operation, result, purposes, \
             body, mac, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        } else {
            "UPDATE keyflow_audit SET kek_id = ?1, time = ?2, actor = ?3, operation = ?4, \
             result = ?5, purposes = ?6, body = ?7, mac = ?8 WHERE seq = ?9"
        };
        let purposes = if r.purposes.is_empty() {
            String::new()
        } else {
            format!(",{},", r.purposes.join(","))
        };
        let done = sqlx::query(sql)
            .bind(&r.kek_id)
            .bind(r.time)
            .bind(&r.actor)
            .bind(&r.operation)
            .bind(&r.result)
            .bind(purposes)
            .bind(&r.body)
            .bind(to_hex(&r.mac))
            .bind(i64::try_from(seq).unwrap())
            .execute(&self.raw)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
}

#[tokio::test]
async fn an_edited_body_breaks_its_mac() {
    let c = six().await;
    // Record 3 was refused; make it (body and indexed copy alike) look allowed.
    assert_eq!(c.records[2].result, "forbidden");
    let edited = c
        .sql(
            "UPDATE keyflow_audit SET result = 'ok', \
             body = replace(body, '\"result\":\"forbidden\"', '\"result\":\"ok\"') WHERE seq = 3",
        )
        .await;
    assert_eq!(edited, 1);
    let now = c.store.audit_scan(2, 1).await.unwrap();
    assert_ne!(now[0].body, c.records[2].body, "the body really changed");
    assert_eq!(now[0].event().unwrap().result, "ok");
    assert_eq!(c.verify().await, Err(ChainBreak::Mac { seq: 3 }));
}

#[tokio::test]
async fn an_edited_indexed_column_does_not_match_its_body() {
    for (set, what) in [
        ("time = time + 1", "time"),
        ("actor = 'someone-else'", "actor"),
        ("operation = 'keys.list'", "operation"),
        ("result = 'unavailable'", "result"),
        ("purposes = ',forged,'", "purposes"),
    ] {
        let c = six().await;
        assert_eq!(
            c.sql(&format!("UPDATE keyflow_audit SET {set} WHERE seq = 2"))
                .await,
            1
        );
        assert_eq!(
            c.verify().await,
            Err(ChainBreak::Copy { seq: 2, what }),
            "{set}"
        );
    }
    // What a filter reads is fooled until the chain is verified.
    let c = six().await;
    c.sql("UPDATE keyflow_audit SET actor = 'someone-else' WHERE seq = 2")
        .await;
    let filter = AuditFilter {
        actor: Some("someone-else".into()),
        ..AuditFilter::default()
    };
    let fooled = c.store.audit_query(&filter).await.unwrap();
    assert_eq!(fooled.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);
}

#[tokio::test]
async fn a_deleted_middle_record_leaves_a_gap() {
    let c = six().await;
    assert_eq!(c.sql("DELETE FROM keyflow_audit WHERE seq = 4").await, 1);
    assert_eq!(
        c.verify().await,
        Err(ChainBreak::Sequence {
            expected: 4,
            found: 5
        })
    );
}

#[tokio::test]
async fn a_forged_record_cannot_be_sealed_without_the_key() {
    let c = six().await;
    // Make room at 3 (two steps: the primary key is checked row by row).
    assert_eq!(
        c.sql("UPDATE keyflow_audit SET seq = seq + 1000 WHERE seq >= 3")
            .await,
        4
    );
    c.sql("UPDATE keyflow_audit SET seq = seq - 999 WHERE seq > 1000")
        .await;
    // A record sealed under another key, chained after record 2, claiming our KEK.
    let forger = sealer();
    let covered_up = AuditEvent::new(5, Source::Http, "tok-1", "decrypt");
    let mut forged = forger.seal(&c.records[1].mac, 3, &covered_up).unwrap();
    forged.kek_id = c.sealer.kek_id().to_owned();
    c.put(3, &forged, true).await;
    // The head moved along, as the forger would.
    sqlx::query("UPDATE keyflow_audit_head SET seq = 7, mac = ?1 WHERE id = 1")
        .bind(to_hex(&c.records[5].mac))
        .execute(&c.raw)
        .await
        .unwrap();
    assert_eq!(c.store.audit_head().await.unwrap().seq, 7);
    assert_eq!(c.verify().await, Err(ChainBreak::Mac { seq: 3 }));
}

#[tokio::test]
async fn swapped_records_do_not_verify_in_each_others_place() {
    let c = six().await;
    c.put(2, &c.records[2], false).await;
    c.put(3, &c.records[1], false).await;
    let swapped = c.store.audit_scan(1, 2).await.unwrap();
    assert_eq!(swapped[0].body, c.records[2].body);
    assert_eq!(swapped[1].mac, c.records[1].mac);
    assert_eq!(c.verify().await, Err(ChainBreak::Mac { seq: 2 }));
}

#[tokio::test]
async fn a_cut_tail_disagrees_with_the_head() {
    let c = six().await;
    assert_eq!(c.sql("DELETE FROM keyflow_audit WHERE seq > 4").await, 2);
    assert_eq!(
        c.verify().await,
        Err(ChainBreak::Head {
            head_seq: 6,
            last_seq: 4
        })
    );
}

/// A batch whose third insert fails leaves neither its first records nor a moved head.
#[tokio::test]
async fn a_failed_append_writes_nothing() {
    let c = six().await;
    // A row already at 9: the next batch (7, 8, 9) collides on its last record.
    c.put(9, &c.records[5], true).await;
    let batch: Vec<AuditEvent> = (7..=9).map(event).collect();
    assert!(c.store.append_audit(&c.sealer, &batch).await.is_err());
    assert_eq!(c.store.audit_head().await.unwrap().seq, 6);
    let after: Vec<u64> = c
        .store
        .audit_scan(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(after, [1, 2, 3, 4, 5, 6, 9]);
    // Once the obstacle is gone, the same batch goes in and the chain verifies.
    assert_eq!(c.sql("DELETE FROM keyflow_audit WHERE seq = 9").await, 1);
    let head = c.store.append_audit(&c.sealer, &batch).await.unwrap();
    assert_eq!(head.seq, 9);
    assert_eq!(c.verify().await, Ok(head));
}

/// A stored row the store cannot decode is an error, not a panic.
#[tokio::test]
async fn an_undecodable_row_is_an_error() {
    let not_hex = format!("mac = '{}'", "z".repeat(64));
    for set in [not_hex.as_str(), "purposes = 'no commas'"] {
        let c = six().await;
        assert_eq!(
            c.sql(&format!("UPDATE keyflow_audit SET {set} WHERE seq = 2"))
                .await,
            1
        );
        let err = c.store.audit_scan(0, 10).await.map(|_| ()).unwrap_err();
        assert!(
            err.to_string().contains("corrupt keyflow_audit row"),
            "{set}: {err}"
        );
        assert!(c.store.audit_query(&AuditFilter::default()).await.is_err());
    }
}
