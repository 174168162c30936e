//! Sealing and verifying the audit chain. Pure: no I/O.
//!
//! Record `n` carries `mac_n = HMAC-SHA256(K, "keyflow-audit-v1" ‖ mac_{n-1} ‖ n (u64 BE)
//! ‖ len(kek_id) (u16 BE) ‖ kek_id ‖ body)`, where `body` is the event's canonical JSON
//! (the exact text stored), `mac_0` is 32 zero bytes and `K` is derived from the KEK
//! named by `kek_id` ([`AUDIT_KEY_LABEL`]). Sequence numbers start at 1 and have no
//! gaps. The indexed copies a store keeps beside the body (time, actor, operation,
//! result, purposes) are checked against the body, so a filter cannot be fooled either.

use keyflow_core::kek::{Kek, MacKey};

use super::AuditEvent;
use crate::keystore::StoreError;

/// The HKDF label of the audit chain's key.
pub const AUDIT_KEY_LABEL: &[u8] = b"keyflow audit chain v1";
const DOMAIN: &[u8] = b"keyflow-audit-v1";

/// Whether two MACs are equal, compared in constant time (as every MAC comparison is,
/// public chain MACs included, so no comparison of a MAC is ever the exception).
pub fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&a[..], &b[..]).into()
}

/// The chain's last record: its sequence number and MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainHead {
    /// The last sequence number (0: empty chain).
    pub seq: u64,
    /// The last MAC (zeros: empty chain).
    pub mac: [u8; 32],
}

/// A sealed record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAudit {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The KEK whose derived key sealed it.
    pub kek_id: String,
    /// Indexed copy of the event's time.
    pub time: i64,
    /// Indexed copy of the event's actor.
    pub actor: String,
    /// Indexed copy of the event's operation.
    pub operation: String,
    /// Indexed copy of the event's result.
    pub result: String,
    /// Indexed copy of the event's purposes.
    pub purposes: Vec<String>,
    /// The event's canonical JSON: what the MAC covers.
    pub body: String,
    /// The record's MAC.
    pub mac: [u8; 32],
}

impl StoredAudit {
    /// The event, parsed from the body.
    pub fn event(&self) -> Result<AuditEvent, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// An event with its canonical JSON, encoded once: the journal writes that text and the
/// chain seals and stores the same text, so a journaled record is encoded once, not
/// twice.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// The event.
    pub event: AuditEvent,
    /// Its canonical JSON (what the MAC covers).
    pub body: String,
}

impl EncodedEvent {
    /// Encodes `event`.
    pub fn new(event: AuditEvent) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_string(&event)?;
        Ok(Self { event, body })
    }

    /// Encodes each of `events`.
    pub fn all(events: &[AuditEvent]) -> Result<Vec<Self>, serde_json::Error> {
        events.iter().cloned().map(Self::new).collect()
    }

    /// [`EncodedEvent::all`] for a store's append: an event that does not encode
    /// cannot be written, a [`StoreError::Backend`].
    pub fn all_for_store(events: &[AuditEvent]) -> Result<Vec<Self>, StoreError> {
        Self::all(events)
            .map_err(|e| StoreError::Backend(format!("cannot encode an audit event: {e}")))
    }
}

/// The chain has reached the largest sequence number a store can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain is full")]
pub struct ChainFull;

/// Seals events with the audit key of one KEK.
pub struct AuditSealer {
    key: MacKey,
    kek_id: String,
}

impl std::fmt::Debug for AuditSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSealer")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

fn mac_input<'a>(
    prev: &'a [u8; 32],
    seq: &'a [u8; 8],
    kek_len: &'a [u8; 2],
    kek_id: &'a str,
    body: &'a str,
) -> [&'a [u8]; 6] {
    [
        DOMAIN,
        prev,
        seq,
        kek_len,
        kek_id.as_bytes(),
        body.as_bytes(),
    ]
}

impl AuditSealer {
    /// The sealer of `kek`'s audit key.
    pub fn new(kek: &Kek) -> keyflow_core::Result<Self> {
        Ok(Self {
            key: kek.derive_mac_key(AUDIT_KEY_LABEL)?,
            kek_id: kek.id().to_owned(),
        })
    }

    /// The KEK id records sealed here carry.
    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// Seals `event` as record `seq` after a record whose MAC is `prev`.
    pub fn seal(
        &self,
        prev: &[u8; 32],
        seq: u64,
        event: &AuditEvent,
    ) -> Result<StoredAudit, serde_json::Error> {
        let body = serde_json::to_string(event)?;
        Ok(self.seal_body(prev, seq, event, body))
    }

    /// `events` sealed one after another after `head`: the records and the new head.
    /// Refused, sealing nothing, when a sequence number would pass `i64::MAX` (what the
    /// SQL backends' column holds).
    pub fn seal_after(
        &self,
        head: ChainHead,
        events: &[EncodedEvent],
    ) -> Result<(Vec<StoredAudit>, ChainHead), ChainFull> {
        let mut head = head;
        let mut sealed = Vec::with_capacity(events.len());
        for event in events {
            let seq = head
                .seq
                .checked_add(1)
                .filter(|s| i64::try_from(*s).is_ok())
                .ok_or(ChainFull)?;
            let record = self.seal_encoded(&head.mac, seq, event);
            head = ChainHead {
                seq,
                mac: record.mac,
            };
            sealed.push(record);
        }
        Ok((sealed, head))
    }

    /// [`seal`](Self::seal) of an event already encoded (the journal's text), without
    /// encoding it again.
    pub fn seal_encoded(&self, prev: &[u8; 32], seq: u64, e: &EncodedEvent) -> StoredAudit {
        self.seal_body(prev, seq, &e.event, e.body.clone())
    }

    fn seal_body(
        &self,
        prev: &[u8; 32],
        seq: u64,
        event: &AuditEvent,
        body: String,
    ) -> StoredAudit {
        let seq_be = seq.to_be_bytes();
        let kek_len = u16::try_from(self.kek_id.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        let mac = self
            .key
            .sign(&mac_input(prev, &seq_be, &kek_len, &self.kek_id, &body));
        StoredAudit {
            seq,
            kek_id: self.kek_id.clone(),
            time: event.time,
            actor: event.actor.clone(),
            operation: event.operation.clone(),
            result: event.result.clone(),
            purposes: event.purposes.clone(),
            body,
            mac,
        }
    }

    /// HMAC of `parts` under the audit key (checkpoints use it with their own domain).
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.key.sign(parts)
    }

    /// Whether `tag` is the HMAC of `parts`, in constant time.
    pub(crate) fn tag_verifies(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.key.verify(parts, tag)
    }

    fn verifies(&self, prev: &[u8; 32], r: &StoredAudit) -> bool {
        let seq_be = r.seq.to_be_bytes();
        let kek_len = u16::try_from(r.kek_id.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        self.key.verify(
            &mac_input(prev, &seq_be, &kek_len, &r.kek_id, &r.body),
            &r.mac,
        )
    }
}

/// Why a record does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// A record is missing before this one, or it is out of order, or repeated.
    #[error("record {found}: expected sequence number {expected} (a record was removed, inserted or reordered)")]
    Sequence {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The MAC does not match: the record, or one before it, was changed.
    #[error("record {seq}: MAC mismatch (the record was edited, or the chain before it)")]
    Mac {
        /// The record.
        seq: u64,
    },
    /// The body is not an event, or an indexed copy differs from it.
    #[error("record {seq}: {what} does not match the sealed body")]
    Copy {
        /// The record.
        seq: u64,
        /// Which column.
        what: &'static str,
    },
    /// Sealed under a KEK whose key is not available here.
    #[error("record {seq}: sealed under KEK {kek_id}, which is not available to verify it")]
    UnknownKek {
        /// The record.
        seq: u64,
        /// The KEK id it names.
        kek_id: String,
    },
    /// The stored head does not point at the last record: the tail was cut (or the head
    /// was moved).
    #[error("the chain head says record {head_seq} but the last record is {last_seq}: records were removed from the end")]
    Head {
        /// The head's sequence number.
        head_seq: u64,
        /// The last record's.
        last_seq: u64,
    },
}

/// Verifies records pushed in ascending order, from sequence number 1.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    sealers: Vec<&'k AuditSealer>,
    prev: ChainHead,
}

impl<'k> ChainVerifier<'k> {
    /// A verifier knowing the audit keys of `sealers` (usually just the current KEK's).
    pub fn new(sealers: Vec<&'k AuditSealer>) -> Self {
        Self {
            sealers,
            prev: ChainHead::default(),
        }
    }

    /// A verifier that starts after `anchor` (a verified checkpoint where retention cut
    /// the chain): the next record must be `anchor.seq + 1`, chained to `anchor.mac`.
    pub fn after(sealers: Vec<&'k AuditSealer>, anchor: ChainHead) -> Self {
        Self {
            sealers,
            prev: anchor,
        }
    }

    /// How far the chain verified so far.
    pub fn verified(&self) -> ChainHead {
        self.prev
    }

    /// Checks the next record.
    pub fn push(&mut self, r: &StoredAudit) -> Result<(), ChainBreak> {
        let expected = self.prev.seq + 1;
        if r.seq != expected {
            return Err(ChainBreak::Sequence {
                expected,
                found: r.seq,
            });
        }
        let sealer = self
            .sealers
            .iter()
            .find(|s| s.kek_id == r.kek_id)
            .ok_or_else(|| ChainBreak::UnknownKek {
                seq: r.seq,
                kek_id: r.kek_id.clone(),
            })?;
        if !sealer.verifies(&self.prev.mac, r) {
            return Err(ChainBreak::Mac { seq: r.seq });
        }
        let copy = |what| ChainBreak::Copy { seq: r.seq, what };
        let e = r.event().map_err(|_| copy("body"))?;
        if e.time != r.time {
            return Err(copy("time"));
        }
        if e.actor != r.actor {
            return Err(copy("actor"));
        }
        if e.operation != r.operation {
            return Err(copy("operation"));
        }
        if e.result != r.result {
            return Err(copy("result"));
        }
        if e.purposes != r.purposes {
            return Err(copy("purposes"));
        }
        self.prev = ChainHead {
            seq: r.seq,
            mac: r.mac,
        };
        Ok(())
    }

    /// After the last record: the stored head must be the last record verified.
    pub fn finish(&self, head: &ChainHead) -> Result<ChainHead, ChainBreak> {
        if head.seq != self.prev.seq || !macs_equal(&head.mac, &self.prev.mac) {
            return Err(ChainBreak::Head {
                head_seq: head.seq,
                last_seq: self.prev.seq,
            });
        }
        Ok(self.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditFilter, Source, MAX_PAGE};
    use keyflow_core::OsRng;

    fn chain(sealer: &AuditSealer, n: u64) -> Vec<StoredAudit> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|seq| {
                let mut e = AuditEvent::new(1_000 + seq as i64, Source::Http, "tok1", "encrypt");
                e.purposes = vec!["userData".into()];
                let r = sealer.seal(&prev, seq, &e).unwrap();
                prev = r.mac;
                r
            })
            .collect()
    }

    fn verify(
        sealer: &AuditSealer,
        rows: &[StoredAudit],
        head: ChainHead,
    ) -> Result<ChainHead, ChainBreak> {
        let mut v = ChainVerifier::new(vec![sealer]);
        for r in rows {
            v.push(r)?;
        }
        v.finish(&head)
    }

    fn head(rows: &[StoredAudit]) -> ChainHead {
        rows.last().map_or_else(ChainHead::default, |r| ChainHead {
            seq: r.seq,
            mac: r.mac,
        })
    }

    #[test]
    fn a_batch_sealed_after_a_head_is_the_chain_sealed_one_by_one() {
        let s = AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        let one_by_one = chain(&s, 5);
        let events: Vec<EncodedEvent> = one_by_one
            .iter()
            .map(|r| EncodedEvent::new(r.event().unwrap()).unwrap())
            .collect();
        let (first, mid) = s.seal_after(ChainHead::default(), &events[..2]).unwrap();
        let (rest, end) = s.seal_after(mid, &events[2..]).unwrap();
        assert_eq!([first, rest].concat(), one_by_one);
        assert_eq!(end, head(&one_by_one));
        assert_eq!(verify(&s, &one_by_one, end), Ok(end));
        // Past what a store's signed 64-bit column holds: refused, nothing sealed.
        let last = ChainHead {
            seq: i64::MAX as u64,
            mac: end.mac,
        };
        assert_eq!(s.seal_after(last, &events[..1]), Err(ChainFull));
        assert_eq!(
            s.seal_after(last, &[]).map(|(r, h)| (r.len(), h)),
            Ok((0, last))
        );
    }

    #[test]
    fn a_filter_matches_exactly_and_pages_within_the_cap() {
        let s = AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        let r = &chain(&s, 3)[1];
        let all = AuditFilter::default();
        assert!(all.matches(r));
        // `all` with one change.
        let with = |change: &dyn Fn(&mut AuditFilter)| {
            let mut f = all.clone();
            change(&mut f);
            f
        };
        for (f, want) in [
            (with(&|f| f.actor = Some("tok1".into())), true),
            (with(&|f| f.actor = Some("tok".into())), false),
            (with(&|f| f.purpose = Some("userData".into())), true),
            (with(&|f| f.purpose = Some("userdata".into())), false),
            (with(&|f| f.operation = Some("encrypt".into())), true),
            (with(&|f| f.result = Some("denied".into())), false),
            (
                with(&|f| {
                    f.since = Some(r.time);
                    f.until = Some(r.time + 1);
                }),
                true,
            ),
            (with(&|f| f.until = Some(r.time)), false),
            (with(&|f| f.before = Some(r.seq)), false),
            (with(&|f| f.before = Some(r.seq + 1)), true),
        ] {
            assert_eq!(f.matches(r), want, "{f:?}");
        }
        assert_eq!(all.page_size(), MAX_PAGE);
        assert_eq!(
            AuditFilter {
                limit: 7,
                ..all.clone()
            }
            .page_size(),
            7
        );
        assert_eq!(
            AuditFilter {
                limit: u32::MAX,
                ..all
            }
            .page_size(),
            MAX_PAGE
        );
    }

    #[test]
    fn every_kind_of_tampering_names_the_first_bad_record() {
        let kek = Kek::generate(&OsRng).unwrap();
        let s = AuditSealer::new(&kek).unwrap();
        let rows = chain(&s, 6);
        let h = head(&rows);
        assert_eq!(verify(&s, &rows, h).unwrap().seq, 6);
        assert_eq!(verify(&s, &[], ChainHead::default()).unwrap().seq, 0);

        // An edited body.
        let mut edited = rows.clone();
        edited[2].body = edited[2].body.replace("tok1", "tok2");
        assert_eq!(verify(&s, &edited, h), Err(ChainBreak::Mac { seq: 3 }));
        // An edited indexed copy (what filters read).
        let mut copy = rows.clone();
        copy[1].actor = "someone-else".into();
        assert_eq!(
            verify(&s, &copy, h),
            Err(ChainBreak::Copy {
                seq: 2,
                what: "actor"
            })
        );
        // A deleted middle record.
        let mut deleted = rows.clone();
        deleted.remove(3);
        assert_eq!(
            verify(&s, &deleted, h),
            Err(ChainBreak::Sequence {
                expected: 4,
                found: 5
            })
        );
        // Two swapped.
        let mut swapped = rows.clone();
        swapped.swap(1, 2);
        assert_eq!(
            verify(&s, &swapped, h),
            Err(ChainBreak::Sequence {
                expected: 2,
                found: 3
            })
        );
        // One inserted, renumbered: its MAC cannot be made without the key.
        let mut inserted = rows.clone();
        let forger = AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        let mut fake = forger
            .seal(
                &rows[1].mac,
                3,
                &AuditEvent::new(5, Source::Http, "x", "decrypt"),
            )
            .unwrap();
        fake.kek_id = s.kek_id().to_owned();
        inserted.insert(2, fake);
        for (i, r) in inserted.iter_mut().enumerate().skip(3) {
            r.seq = i as u64 + 1;
        }
        assert_eq!(verify(&s, &inserted, h), Err(ChainBreak::Mac { seq: 3 }));
        // The tail cut, head left alone.
        assert_eq!(
            verify(&s, &rows[..4], h),
            Err(ChainBreak::Head {
                head_seq: 6,
                last_seq: 4
            })
        );
        // Records sealed under a KEK not at hand.
        let other = AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        assert!(matches!(
            verify(&other, &rows, h),
            Err(ChainBreak::UnknownKek { seq: 1, .. })
        ));
    }

    #[test]
    fn debug_shows_no_key() {
        let kek = Kek::generate(&OsRng).unwrap();
        let s = AuditSealer::new(&kek).unwrap();
        let text = format!("{s:?}");
        assert!(text.contains(kek.id()) && !text.contains("key:"), "{text}");
    }
}
