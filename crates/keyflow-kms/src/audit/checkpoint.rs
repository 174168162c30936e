//! Signed checkpoints of the audit chain: (sequence number, MAC, time) tagged with the
//! audit key, to keep somewhere the database's writers cannot reach.
//!
//! The chain alone detects a cut tail only while its head row is intact; whoever can
//! write the database can cut the tail *and* move the head back. A checkpoint taken
//! earlier and kept elsewhere proves that the chain reached its sequence number with
//! that MAC: verifying against it fails if any record up to it was removed. A checkpoint
//! also marks where retention pruned the chain: verification then starts after it.
//!
//! The two uses are two [`CheckpointKind`]s, tagged under different domains so one
//! cannot pass for the other: operator checkpoints are handed out and need not stay
//! secret, and if one could serve as the database's retention anchor, whoever can write
//! the database and has seen one could delete every record up to it unnoticed.

use serde::{Deserialize, Serialize};

use super::chain::{AuditSealer, ChainHead};

const CHECKPOINT_DOMAIN: &[u8] = b"keyflow-audit-checkpoint-v1";
const ANCHOR_DOMAIN: &[u8] = b"keyflow-audit-anchor-v1";

/// What a checkpoint was made for (part of what its tag covers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// Taken for the operator to keep outside the database (`keyflow audit checkpoint`).
    #[default]
    Checkpoint,
    /// Where retention cut the chain, kept in the database (`keyflow audit prune`).
    Anchor,
}

impl CheckpointKind {
    fn domain(self) -> &'static [u8] {
        match self {
            CheckpointKind::Checkpoint => CHECKPOINT_DOMAIN,
            CheckpointKind::Anchor => ANCHOR_DOMAIN,
        }
    }

    /// `checkpoint` or `anchor`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Checkpoint => "checkpoint",
            CheckpointKind::Anchor => "anchor",
        }
    }
}

/// A signed statement "the chain reached record `seq`, whose MAC is `mac`, at `time`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// Format version (1).
    pub version: u8,
    /// What it was made for (absent: an operator checkpoint).
    #[serde(default)]
    pub kind: CheckpointKind,
    /// The record's sequence number.
    pub seq: u64,
    /// The record's MAC, hex.
    pub mac: String,
    /// When the checkpoint was taken (Unix ms).
    pub time: i64,
    /// The KEK whose audit key tagged it.
    pub kek_id: String,
    /// HMAC-SHA256 over the fields above, hex.
    pub tag: String,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not made with this KEK's audit key, or edited since.
    #[error("the checkpoint's tag does not verify under KEK {0} (forged, edited, or another keystore's)")]
    BadTag(String),
    /// A field is not well-formed.
    #[error("the checkpoint is malformed: {0}")]
    Malformed(&'static str),
    /// The chain does not reach it.
    #[error("the chain ends at record {last} but the checkpoint vouches for record {seq}: records after {last} were removed")]
    Truncated {
        /// The checkpoint's sequence number.
        seq: u64,
        /// The chain's last verified record.
        last: u64,
    },
    /// The chain's record at the checkpoint's position is another one.
    #[error("record {0} differs from the one the checkpoint vouches for: the chain was rewritten")]
    Diverged(u64),
}

fn tag_input(kind: CheckpointKind, seq: u64, mac: &[u8; 32], time: i64, kek_id: &str) -> Vec<u8> {
    let domain = kind.domain();
    let mut m = Vec::with_capacity(domain.len() + 8 + 32 + 8 + 2 + kek_id.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(mac);
    m.extend_from_slice(&time.to_be_bytes());
    m.extend_from_slice(
        &u16::try_from(kek_id.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    m.extend_from_slice(kek_id.as_bytes());
    m
}

impl Checkpoint {
    /// An operator checkpoint of `head`, tagged by `sealer`.
    pub fn sign(sealer: &AuditSealer, head: &ChainHead, time: i64) -> Self {
        Self::sign_as(CheckpointKind::Checkpoint, sealer, head, time)
    }

    /// A retention anchor at `head` (the last record pruned), tagged by `sealer`.
    pub fn sign_anchor(sealer: &AuditSealer, head: &ChainHead, time: i64) -> Self {
        Self::sign_as(CheckpointKind::Anchor, sealer, head, time)
    }

    fn sign_as(kind: CheckpointKind, sealer: &AuditSealer, head: &ChainHead, time: i64) -> Self {
        let tag = sealer.tag(&[&tag_input(kind, head.seq, &head.mac, time, sealer.kek_id())]);
        Self {
            version: 1,
            kind,
            seq: head.seq,
            mac: keyflow_core::to_hex(&head.mac),
            time,
            kek_id: sealer.kek_id().to_owned(),
            tag: keyflow_core::to_hex(&tag),
        }
    }

    /// The head it vouches for, once its tag verifies under `sealer`.
    pub fn verify(&self, sealer: &AuditSealer) -> Result<ChainHead, CheckpointError> {
        if self.version != 1 {
            return Err(CheckpointError::Malformed("version"));
        }
        let mac = decode32(&self.mac).ok_or(CheckpointError::Malformed("mac"))?;
        let tag = decode32(&self.tag).ok_or(CheckpointError::Malformed("tag"))?;
        if self.kek_id != sealer.kek_id()
            || !sealer.tag_verifies(
                &[&tag_input(
                    self.kind,
                    self.seq,
                    &mac,
                    self.time,
                    &self.kek_id,
                )],
                &tag,
            )
        {
            return Err(CheckpointError::BadTag(self.kek_id.clone()));
        }
        Ok(ChainHead { seq: self.seq, mac })
    }

    /// Checks a verified chain against the checkpoint: `mac_at_seq` is the MAC of the
    /// chain's record at the checkpoint's position (`None` if the chain is shorter),
    /// `last` the chain's last verified sequence number.
    pub fn matches(
        &self,
        vouched: &ChainHead,
        mac_at_seq: Option<&[u8; 32]>,
        last: u64,
    ) -> Result<(), CheckpointError> {
        match mac_at_seq {
            None if vouched.seq == 0 => Ok(()),
            None => Err(CheckpointError::Truncated {
                seq: vouched.seq,
                last,
            }),
            Some(mac) if super::chain::macs_equal(mac, &vouched.mac) => Ok(()),
            Some(_) => Err(CheckpointError::Diverged(vouched.seq)),
        }
    }
}

fn decode32(hex: &str) -> Option<[u8; 32]> {
    let bytes = keyflow_core::from_hex(hex)?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_core::kek::Kek;
    use keyflow_core::OsRng;

    #[test]
    fn a_checkpoint_verifies_only_untouched_and_under_its_kek() {
        let kek = Kek::generate(&OsRng).unwrap();
        let s = AuditSealer::new(&kek).unwrap();
        let head = ChainHead {
            seq: 42,
            mac: [7; 32],
        };
        let c = Checkpoint::sign(&s, &head, 1_000);
        assert_eq!(c.verify(&s), Ok(head));
        let json = serde_json::to_string(&c).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify(&s), Ok(head));

        let mut moved = c.clone();
        moved.seq = 41;
        assert!(matches!(moved.verify(&s), Err(CheckpointError::BadTag(_))));
        let mut bad = c.clone();
        bad.mac = "zz".into();
        assert_eq!(bad.verify(&s), Err(CheckpointError::Malformed("mac")));
        let other = AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        assert!(matches!(c.verify(&other), Err(CheckpointError::BadTag(_))));

        assert_eq!(c.matches(&head, Some(&[7; 32]), 50), Ok(()));
        assert_eq!(
            c.matches(&head, Some(&[8; 32]), 50),
            Err(CheckpointError::Diverged(42))
        );
        assert_eq!(
            c.matches(&head, None, 40),
            Err(CheckpointError::Truncated { seq: 42, last: 40 })
        );
        assert!(CheckpointError::Truncated { seq: 42, last: 40 }
            .to_string()
            .contains("records after 40 were removed"));
    }

    #[test]
    fn an_anchor_and_a_checkpoint_cannot_pass_for_each_other() {
        let s = AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        let head = ChainHead {
            seq: 9,
            mac: [3; 32],
        };
        let c = Checkpoint::sign(&s, &head, 5);
        let a = Checkpoint::sign_anchor(&s, &head, 5);
        assert_eq!(
            (c.kind, a.kind),
            (CheckpointKind::Checkpoint, CheckpointKind::Anchor)
        );
        assert_ne!(c.tag, a.tag);
        assert_eq!(a.verify(&s), Ok(head));
        let mut relabelled = c.clone();
        relabelled.kind = CheckpointKind::Anchor;
        assert!(matches!(
            relabelled.verify(&s),
            Err(CheckpointError::BadTag(_))
        ));

        // The kind is in the JSON; a checkpoint without one is an operator checkpoint.
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["kind"], "anchor");
        let mut bare = serde_json::to_value(&c).unwrap();
        bare.as_object_mut().unwrap().remove("kind");
        let back: Checkpoint = serde_json::from_value(bare).unwrap();
        assert_eq!(back.verify(&s), Ok(head));
    }
}
