//! Row MACs: the keystore rows the server trusts, authenticated under a KEK-derived key.
//!
//! Whoever can write the keystore database could otherwise mint an admin token (a row
//! with a known SHA-256), bring a revoked version back (flip its status), stretch a
//! rotation policy or move a wrapped key to another row. Every `key_versions`,
//! `api_tokens` and `key_policies` row therefore carries `row_mac` =
//! HMAC-SHA256(`HKDF(KEK, "keyflow row mac v1")`, canonical encoding of the row). The
//! backends seal what they write and check what they read through one [`RowSealer`];
//! a row whose MAC is missing or wrong is refused, counted, logged and reported to the
//! alert hook (the server turns it into an audit record and a `/status` alert).
//!
//! Covered: every column that decides what a row allows — for a key version its
//! purpose, number, state, algorithm, KEK id, times, revocation reason and the wrapped
//! key itself (so a wrapped key cannot be moved to a row with another state); for a
//! token everything but nothing derived; for a policy all of it. Not covered: a
//! version's `encryptions` counter, which many processes add to without the KEK
//! (its budget is enforced from the counts a process has seen, see the service).
//!
//! Rows written before row MACs existed (migration 0007) are sealed once, at the first
//! unlock after the upgrade ([`crate::kek_provider::unlock`]); see
//! docs/ARCHITECTURE.md for that trust-on-first-use step and its limits.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use keyflow_core::kek::{Kek, MacKey};
use keyflow_core::Purpose;

use crate::access::TokenRecord;
use crate::keystore::StoreError;
use crate::model::{KeyVersionRecord, Policy};

/// HKDF label of the row MAC key.
pub const ROW_MAC_LABEL: &[u8] = b"keyflow row mac v1";
/// Length of a stored row MAC.
pub const ROW_MAC_LEN: usize = 32;
/// Metadata key recording the sealing state of rows from before migration 0007:
/// `pending` (set by the migration when it found rows) until the first unlock seals
/// them, then `sealed`.
pub const META_ROW_MACS: &str = "row_macs";

/// A row that failed its integrity check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowRefusal {
    /// `key_versions`, `api_tokens` or `key_policies`.
    pub table: &'static str,
    /// The row's key: `purpose/version`, the token id, or the purpose.
    pub row: String,
    /// `missing` (no MAC) or `mismatch` (a MAC that does not match the row).
    pub reason: &'static str,
}

impl fmt::Display for RowRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} row {} failed its integrity check ({} MAC); refused",
            self.table, self.row, self.reason
        )
    }
}

type AlertHook = Arc<dyn Fn(&RowRefusal) + Send + Sync>;

/// Seals and checks keystore rows under a key derived from one KEK.
pub struct RowSealer {
    key: MacKey,
    kek_id: String,
    refused: AtomicU64,
    alert: Mutex<Option<AlertHook>>,
}

impl fmt::Debug for RowSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowSealer")
            .field("kek_id", &self.kek_id)
            .field("refused", &self.refused())
            .finish_non_exhaustive()
    }
}

/// Canonical encoding: a table tag, then each field length-prefixed (u32 BE) or as a
/// fixed-size integer, optional fields behind a presence byte.
struct Canon(Vec<u8>);

impl Canon {
    fn new(table: &str) -> Self {
        let mut c = Canon(Vec::with_capacity(160));
        c.bytes(table.as_bytes());
        c
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn int(&mut self, n: i64) -> &mut Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        self.opt(b, Self::bytes)
    }
    fn opt_int(&mut self, n: Option<i64>) -> &mut Self {
        self.opt(n, Self::int)
    }
    /// A presence byte (1 or 0), then the value when there is one.
    fn opt<T>(&mut self, value: Option<T>, put: fn(&mut Self, T) -> &mut Self) -> &mut Self {
        match value {
            Some(v) => {
                self.0.push(1);
                put(self, v)
            }
            None => {
                self.0.push(0);
                self
            }
        }
    }
}

fn version_bytes(r: &KeyVersionRecord) -> Vec<u8> {
    let mut c = Canon::new("key_versions");
    c.bytes(r.purpose.as_str().as_bytes())
        .int(i64::from(r.version.get()))
        .bytes(r.status.as_str().as_bytes())
        .bytes(r.algorithm.as_bytes())
        .bytes(r.kek_id.as_bytes())
        .int(r.created_at)
        .int(r.status_changed_at)
        .opt_bytes(r.revoked_reason.as_deref().map(str::as_bytes))
        .opt_bytes(r.wrapped_key.as_deref());
    c.0
}

fn token_bytes(t: &TokenRecord) -> Vec<u8> {
    let mut c = Canon::new("api_tokens");
    c.bytes(t.id.as_bytes())
        .bytes(&t.secret_hash)
        .bytes(t.role.as_str().as_bytes())
        .int(i64::try_from(t.purposes.len()).unwrap_or(i64::MAX));
    for p in &t.purposes {
        c.bytes(p.as_str().as_bytes());
    }
    c.bytes(t.name.as_bytes())
        .int(t.created_at)
        .opt_int(t.expires_at)
        .opt_int(t.revoked_at);
    c.0
}

fn policy_bytes(purpose: &Purpose, p: &Policy) -> Vec<u8> {
    let mut c = Canon::new("key_policies");
    c.bytes(purpose.as_str().as_bytes())
        .int(i64::from(p.rotation_days))
        .int(i64::from(p.grace_days))
        .int(i64::from(p.warn_days))
        .int(i64::try_from(p.max_encryptions).unwrap_or(i64::MAX));
    c.0
}

impl RowSealer {
    /// The sealer of `kek`'s keystore.
    pub fn new(kek: &Kek) -> keyflow_core::Result<Self> {
        Ok(Self {
            key: kek.derive_mac_key(ROW_MAC_LABEL)?,
            kek_id: kek.id().to_owned(),
            refused: AtomicU64::new(0),
            alert: Mutex::new(None),
        })
    }

    /// The id of the KEK the key was derived from.
    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// Rows refused since this sealer was made.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Called with every refusal (after it is counted and logged); replaces an earlier
    /// hook. The server records an audit event from it.
    pub fn on_refusal(&self, hook: impl Fn(&RowRefusal) + Send + Sync + 'static) {
        *self.alert.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
    }

    /// The MAC to store with a key-version row.
    pub fn version_mac(&self, r: &KeyVersionRecord) -> [u8; ROW_MAC_LEN] {
        self.key.sign(&[&version_bytes(r)])
    }

    /// The MAC to store with a token row.
    pub fn token_mac(&self, t: &TokenRecord) -> [u8; ROW_MAC_LEN] {
        self.key.sign(&[&token_bytes(t)])
    }

    /// The MAC to store with a policy row.
    pub fn policy_mac(&self, purpose: &Purpose, p: &Policy) -> [u8; ROW_MAC_LEN] {
        self.key.sign(&[&policy_bytes(purpose, p)])
    }

    /// Checks a key-version row against its stored MAC (constant time).
    pub fn check_version(
        &self,
        r: &KeyVersionRecord,
        mac: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let row = || format!("{}/{}", r.purpose.as_str(), r.version.get());
        self.check(&version_bytes(r), mac, "key_versions", row)
    }

    /// Checks a token row against its stored MAC (constant time).
    pub fn check_token(&self, t: &TokenRecord, mac: Option<&[u8]>) -> Result<(), StoreError> {
        self.check(&token_bytes(t), mac, "api_tokens", || t.id.clone())
    }

    /// Checks a policy row against its stored MAC (constant time).
    pub fn check_policy(
        &self,
        purpose: &Purpose,
        p: &Policy,
        mac: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.check(&policy_bytes(purpose, p), mac, "key_policies", || {
            purpose.as_str().to_owned()
        })
    }

    fn check(
        &self,
        encoded: &[u8],
        mac: Option<&[u8]>,
        table: &'static str,
        row: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let reason = match mac {
            Some(m) if self.key.verify(&[encoded], m) => return Ok(()),
            Some(_) => "mismatch",
            None => "missing",
        };
        let refusal = RowRefusal {
            table,
            row: row(),
            reason,
        };
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            table = refusal.table,
            row = %refusal.row,
            reason = refusal.reason,
            "keystore row failed its integrity check: refused (written by someone without the KEK?)"
        );
        let hook = self
            .alert
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(&refusal);
        }
        Err(StoreError::Corrupt(refusal.to_string()))
    }
}

/// Where a backend keeps the sealer of the KEK it was unlocked with. Clones share it.
/// Until one is installed, rows that need checking cannot be read or written.
#[derive(Clone, Default)]
pub struct SealerSlot(Arc<ArcSwapOption<RowSealer>>);

impl fmt::Debug for SealerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.load().is_some() {
            "SealerSlot(installed)"
        } else {
            "SealerSlot(empty)"
        })
    }
}

impl SealerSlot {
    /// Installs (or replaces, after a KEK rotation) the sealer.
    pub fn install(&self, sealer: Arc<RowSealer>) {
        self.0.store(Some(sealer));
    }

    /// The installed sealer, if any.
    pub fn current(&self) -> Option<Arc<RowSealer>> {
        self.0.load_full()
    }

    /// The installed sealer, or an error saying rows cannot be trusted yet.
    pub fn get(&self) -> Result<Arc<RowSealer>, StoreError> {
        self.current().ok_or_else(|| {
            StoreError::Backend(
                "keystore rows cannot be verified before the KEK is unlocked (no row sealer installed)"
                    .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::model::{KeyStatus, DEK_ALGORITHM};
    use keyflow_core::{KeyVersion, OsRng};
    use std::sync::atomic::AtomicUsize;

    fn version() -> KeyVersionRecord {
        KeyVersionRecord {
            purpose: Purpose::new("userData").unwrap(),
            version: KeyVersion::new(3).unwrap(),
            status: KeyStatus::Revoked,
            algorithm: DEK_ALGORITHM.into(),
            wrapped_key: Some(vec![9; 60]),
            kek_id: "kek-1".into(),
            created_at: 1,
            status_changed_at: 2,
            encryptions: 10,
            revoked_reason: Some("leak".into()),
        }
    }

    fn token() -> TokenRecord {
        TokenRecord {
            id: "00000000000000aa".into(),
            secret_hash: [7; 32],
            role: Role::Service,
            purposes: vec![Purpose::new("userData").unwrap()],
            name: "svc".into(),
            created_at: 5,
            expires_at: None,
            revoked_at: Some(6),
        }
    }

    #[test]
    fn every_trusted_field_is_covered() {
        let kek = Kek::generate(&OsRng).unwrap();
        let s = RowSealer::new(&kek).unwrap();
        let r = version();
        let mac = s.version_mac(&r);
        s.check_version(&r, Some(&mac)).unwrap();
        // The usage counter is not covered (many writers add to it without the KEK).
        let mut more = r.clone();
        more.encryptions = 99;
        s.check_version(&more, Some(&mac)).unwrap();
        type Edit = Box<dyn Fn(&mut KeyVersionRecord)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.status = KeyStatus::Active),
            Box::new(|r| r.purpose = Purpose::new("financialData").unwrap()),
            Box::new(|r| r.version = KeyVersion::new(4).unwrap()),
            Box::new(|r| r.algorithm = "AES-128".into()),
            Box::new(|r| r.kek_id = "kek-2".into()),
            Box::new(|r| r.created_at += 1),
            Box::new(|r| r.status_changed_at += 1),
            Box::new(|r| r.revoked_reason = None),
            Box::new(|r| r.wrapped_key = Some(vec![8; 60])),
            Box::new(|r| r.wrapped_key = None),
        ];
        for edit in edits {
            let mut forged = r.clone();
            edit(&mut forged);
            let e = s
                .check_version(&forged, Some(&mac))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("key_versions row") && e.contains("mismatch"),
                "{e}"
            );
        }
        let e = s.check_version(&r, None).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");

        let t = token();
        let mac = s.token_mac(&t);
        s.check_token(&t, Some(&mac)).unwrap();
        for edit in [
            |t: &mut TokenRecord| t.role = Role::Admin,
            |t: &mut TokenRecord| t.revoked_at = None,
            |t: &mut TokenRecord| t.secret_hash = [1; 32],
            |t: &mut TokenRecord| t.purposes.clear(),
            |t: &mut TokenRecord| t.expires_at = Some(7),
            |t: &mut TokenRecord| t.id = "00000000000000ab".into(),
        ] {
            let mut forged = t.clone();
            edit(&mut forged);
            assert!(s.check_token(&forged, Some(&mac)).is_err());
        }

        let p = Purpose::new("userData").unwrap();
        let policy = Policy::default();
        let mac = s.policy_mac(&p, &policy);
        s.check_policy(&p, &policy, Some(&mac)).unwrap();
        let stretched = Policy {
            max_encryptions: 1 << 32,
            ..policy
        };
        assert!(s.check_policy(&p, &stretched, Some(&mac)).is_err());
        assert_eq!(s.refused(), 10 + 1 + 6 + 1);
    }

    #[test]
    fn another_kek_refuses_and_the_hook_hears_it() {
        let a = RowSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        let b = RowSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        let heard = Arc::new(AtomicUsize::new(0));
        let h = heard.clone();
        b.on_refusal(move |r| {
            assert_eq!(r.table, "api_tokens");
            h.fetch_add(1, Ordering::SeqCst);
        });
        let t = token();
        assert!(b.check_token(&t, Some(&a.token_mac(&t))).is_err());
        assert_eq!(heard.load(Ordering::SeqCst), 1);
        assert_eq!((a.refused(), b.refused()), (0, 1));
        // Debug shows neither key nor MAC bytes.
        let d = format!("{b:?}");
        assert!(d.starts_with("RowSealer") && !d.contains("key:"), "{d}");
    }

    #[test]
    fn an_empty_slot_refuses() {
        let slot = SealerSlot::default();
        assert!(slot.get().unwrap_err().to_string().contains("unlocked"));
        let s = Arc::new(RowSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap());
        slot.clone().install(s.clone());
        assert!(Arc::ptr_eq(&slot.get().unwrap(), &s));
    }
}
