//! A real EncryptionService over an in-memory keystore (`keyflow-testkit`).
#![allow(dead_code, unused_imports)]

use keyflow_kms::{EncryptionService, ServiceConfig};

pub use keyflow_testkit::env::purpose;

/// The environment (its directory holds the KEK) and a service over it.
pub struct Env {
    pub dir: keyflow_testkit::Env,
    pub service: EncryptionService,
}

pub async fn env() -> Env {
    let dir = keyflow_testkit::Env::new();
    let service = dir.service(ServiceConfig::default()).await;
    Env { dir, service }
}
