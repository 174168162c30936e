//! The refusals of [`AuditStore::audit_prune`](super::AuditStore::audit_prune) that
//! every store shares (SQL and in-memory): which anchors can be where the chain starts.

use super::{ChainHead, Checkpoint};
use crate::keystore::StoreError;

/// A 32-byte MAC from its hex form (a stored column, an anchor's fields).
pub fn mac_from_hex(s: &str) -> Option<[u8; 32]> {
    keyflow_core::from_hex(s)?.try_into().ok()
}

fn refused(why: String) -> StoreError {
    StoreError::Conflict(format!("audit prune refused: {why}"))
}

/// Whether `anchor` may become the chain's start, given the chain as the store holds it
/// inside the prune's transaction: the `head`, the `current` anchor's sequence number,
/// and the MAC of the stored record at `anchor.seq` (`None`: no such record). Checked
/// before anything is written; every store refuses the same anchors.
pub fn check_prune(
    anchor: &Checkpoint,
    head: &ChainHead,
    current: Option<u64>,
    stored_mac: Option<&[u8; 32]>,
) -> Result<(), StoreError> {
    let mac = mac_from_hex(&anchor.mac)
        .ok_or_else(|| refused("the anchor's MAC is not 32 bytes of hex".into()))?;
    if mac_from_hex(&anchor.tag).is_none() {
        return Err(refused("the anchor's tag is not 32 bytes of hex".into()));
    }
    let after = current.unwrap_or(0);
    if anchor.seq <= after {
        return Err(refused(format!(
            "the anchor (record {}) is not above the current one (record {after})",
            anchor.seq
        )));
    }
    if anchor.seq > head.seq {
        return Err(refused(format!(
            "the anchor (record {}) is above the chain head (record {})",
            anchor.seq, head.seq
        )));
    }
    match stored_mac {
        Some(stored) if super::chain::macs_equal(stored, &mac) => Ok(()),
        Some(_) => Err(refused(format!(
            "record {} is not the one the anchor names (the chain changed since it was verified)",
            anchor.seq
        ))),
        None => Err(refused(format!("record {} is not stored", anchor.seq))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::CheckpointKind;
    use keyflow_core::to_hex;

    #[test]
    fn macs_decode_only_from_64_hex_digits() {
        let mac: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(mac_from_hex(&to_hex(&mac)), Some(mac));
        assert_eq!(mac_from_hex(&to_hex(&mac).to_uppercase()), Some(mac));
        assert_eq!(mac_from_hex(&to_hex(&mac[..31])), None);
        assert_eq!(mac_from_hex(&"g".repeat(64)), None);
        assert_eq!(mac_from_hex(&"é".repeat(32)), None);
        assert_eq!(mac_from_hex(&"+1".repeat(32)), None);
    }

    #[test]
    fn prune_refusals() {
        let mac = [5u8; 32];
        let head = ChainHead {
            seq: 10,
            mac: [9; 32],
        };
        let at = |seq: u64| Checkpoint {
            version: 1,
            kind: CheckpointKind::Anchor,
            seq,
            mac: to_hex(&mac),
            time: 0,
            kek_id: "k".into(),
            tag: to_hex(&[1; 32]),
        };
        assert!(check_prune(&at(4), &head, None, Some(&mac)).is_ok());
        assert!(check_prune(&at(10), &head, Some(4), Some(&mac)).is_ok());
        let refusal = |a: &Checkpoint, current: Option<u64>, stored: Option<&[u8; 32]>| {
            check_prune(a, &head, current, stored)
                .unwrap_err()
                .to_string()
        };
        assert!(refusal(&at(0), None, Some(&mac)).contains("not above the current one (record 0)"));
        assert!(
            refusal(&at(4), Some(4), Some(&mac)).contains("not above the current one (record 4)")
        );
        assert!(refusal(&at(11), None, Some(&mac)).contains("above the chain head (record 10)"));
        assert!(refusal(&at(4), None, Some(&[6; 32])).contains("record 4 is not the one"));
        assert!(refusal(&at(4), None, None).contains("record 4 is not stored"));
        let mut bad = at(4);
        bad.mac = "zz".into();
        assert!(refusal(&bad, None, Some(&mac)).contains("MAC"));
        let mut bad = at(4);
        bad.tag = String::new();
        assert!(refusal(&bad, None, Some(&mac)).contains("tag"));
    }
}
