//! [`Op`]: the operations the API performs, and their stable names.

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

pub(super) const OPS: [Op; OP_COUNT] = [
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
pub(super) const OP_COUNT: usize = 21;

/// The operations whose errors the `decrypt_error_rate` alert counts.
pub const DECRYPT_OPS: [Op; 4] = [
    Op::Decrypt,
    Op::BatchDecrypt,
    Op::DecryptFields,
    Op::FileDecrypt,
];

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

    pub(super) fn index(self) -> usize {
        OPS.iter().position(|o| *o == self).unwrap_or(0)
    }
}
