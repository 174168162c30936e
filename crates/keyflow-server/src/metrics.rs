//! Operation records and counters.
//!
//! Every handler ends by calling [`Metrics::record`]: one structured `tracing` event
//! (target `keyflow::ops`) with actor, operation, purpose, key version, item count,
//! result and request id — never plaintext, ciphertext, tokens or keys — and a counter
//! increment for `/metrics`. The same call fills the request's audit slot
//! ([`crate::audit::AuditSlot`]) with the purpose, version, item count and result, which
//! the audit layer turns into the request's audit record.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use keyflow_kms::CacheStats;

use crate::extract::RequestId;

/// The operations the API performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `POST /encrypt`
    Encrypt,
    /// `POST /decrypt`
    Decrypt,
    /// `POST /batch/encrypt`
    BatchEncrypt,
    /// `POST /batch/decrypt`
    BatchDecrypt,
    /// `POST /blind-index`
    BlindIndex,
    /// `POST /mask`
    Mask,
    /// `POST /keys/generate`
    KeysGenerate,
    /// `POST /keys/rotate`
    KeysRotate,
    /// `GET /keys`
    KeysList,
    /// `GET /status`
    Status,
    /// `POST /keys/backup`
    KeysBackup,
    /// `POST /keys/restore`
    KeysRestore,
    /// `POST /keys/revoke`, `/keys/reinstate`, `/keys/destroy`
    KeysLifecycle,
    /// `GET|POST /keys/policy`
    KeysPolicy,
    /// `POST /keys/rotate-due`
    KeysRotateDue,
    /// `POST /rewrap`
    Rewrap,
    /// `POST /files/encrypt`, `/encrypt-file`
    FileEncrypt,
    /// `POST /files/decrypt`, `/decrypt-file`
    FileDecrypt,
    /// `POST /encrypt-fields`
    EncryptFields,
    /// `POST /decrypt-fields`
    DecryptFields,
    /// `GET /audit`
    Audit,
}

const OPS: [Op; OP_COUNT] = [
    Op::Encrypt,
    Op::Decrypt,
    Op::BatchEncrypt,
    Op::BatchDecrypt,
    Op::BlindIndex,
    Op::Mask,
    Op::KeysGenerate,
    Op::KeysRotate,
    Op::KeysList,
    Op::Status,
    Op::KeysBackup,
    Op::KeysRestore,
    Op::KeysLifecycle,
    Op::KeysPolicy,
    Op::KeysRotateDue,
    Op::Rewrap,
    Op::FileEncrypt,
    Op::FileDecrypt,
    Op::EncryptFields,
    Op::DecryptFields,
    Op::Audit,
];
const OP_COUNT: usize = 21;

impl Op {
    /// The operation's name in logs, metrics and audit records.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::BatchEncrypt => "batch_encrypt",
            Op::BatchDecrypt => "batch_decrypt",
            Op::BlindIndex => "blind_index",
            Op::Mask => "mask",
            Op::KeysGenerate => "keys_generate",
            Op::KeysRotate => "keys_rotate",
            Op::KeysList => "keys_list",
            Op::Status => "status",
            Op::KeysBackup => "keys_backup",
            Op::KeysRestore => "keys_restore",
            Op::KeysLifecycle => "keys_lifecycle",
            Op::KeysPolicy => "keys_policy",
            Op::KeysRotateDue => "keys_rotate_due",
            Op::Rewrap => "rewrap",
            Op::FileEncrypt => "file_encrypt",
            Op::FileDecrypt => "file_decrypt",
            Op::EncryptFields => "encrypt_fields",
            Op::DecryptFields => "decrypt_fields",
            Op::Audit => "audit",
        }
    }

    fn index(self) -> usize {
        OPS.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// Counters per operation: successes, failures, items processed.
#[derive(Default)]
pub struct Metrics {
    ok: [AtomicU64; OP_COUNT],
    failed: [AtomicU64; OP_COUNT],
    items: [AtomicU64; OP_COUNT],
}

/// One operation's record.
#[derive(Debug)]
pub struct OpRecord<'a> {
    /// What was done.
    pub op: Op,
    /// Token id of the caller.
    pub actor: &'a str,
    /// Purpose involved, if one.
    pub purpose: Option<&'a str>,
    /// Key version involved, if one.
    pub key_version: Option<u32>,
    /// Items (fields, batch entries) processed.
    pub items: usize,
    /// Outcome: `ok`, or the error code.
    pub result: &'a str,
    /// The request (its id, also in the `x-request-id` response header, and its audit
    /// slot).
    pub request: &'a RequestId,
}

impl Metrics {
    /// Logs and counts one operation, and notes it in the request's audit slot.
    pub fn record(&self, r: &OpRecord<'_>) {
        r.request.audit().note(r);
        let i = r.op.index();
        let counter = if r.result == "ok" {
            &self.ok
        } else {
            &self.failed
        };
        if let Some(c) = counter.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = self.items.get(i) {
            c.fetch_add(r.items as u64, Ordering::Relaxed);
        }
        tracing::info!(
            target: "keyflow::ops",
            actor = r.actor,
            operation = r.op.name(),
            purpose = r.purpose,
            key_version = r.key_version,
            items = r.items,
            result = r.result,
            request_id = r.request.0.as_str(),
        );
    }

    /// Prometheus text exposition.
    pub fn render(&self, cache: CacheStats, uptime_secs: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP keyflow_operations_total API operations by result.\n# TYPE keyflow_operations_total counter\n");
        for op in OPS {
            let i = op.index();
            for (result, c) in [("ok", &self.ok), ("error", &self.failed)] {
                let n = c.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
                let _ = writeln!(
                    out,
                    "keyflow_operations_total{{operation=\"{}\",result=\"{result}\"}} {n}",
                    op.name()
                );
            }
        }
        out.push_str("# HELP keyflow_operation_items_total Items processed by operation.\n# TYPE keyflow_operation_items_total counter\n");
        for op in OPS {
            let n = self
                .items
                .get(op.index())
                .map_or(0, |c| c.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "keyflow_operation_items_total{{operation=\"{}\"}} {n}",
                op.name()
            );
        }
        let _ = write!(
            out,
            "# HELP keyflow_key_cache_hits_total Key cache hits.\n# TYPE keyflow_key_cache_hits_total counter\nkeyflow_key_cache_hits_total {}\n\
             # HELP keyflow_key_cache_misses_total Key cache misses.\n# TYPE keyflow_key_cache_misses_total counter\nkeyflow_key_cache_misses_total {}\n\
             # HELP keyflow_key_cache_entries Key versions cached.\n# TYPE keyflow_key_cache_entries gauge\nkeyflow_key_cache_entries {}\n\
             # HELP keyflow_uptime_seconds Seconds since start.\n# TYPE keyflow_uptime_seconds gauge\nkeyflow_uptime_seconds {uptime_secs}\n",
            cache.hits, cache.misses, cache.entries
        );
        out
    }
}
