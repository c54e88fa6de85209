//! Carriers. The sandbox carrier accepts every shipment and dispatches it at once.

use sha2::{Digest, Sha256};

use crate::Result;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub carrier: String,
    pub tracking_number: String,
}

pub trait Carrier: Send + Sync + 'static {
    /// Books the shipment; the same `idempotency_key` books it once.
    fn dispatch(&self, idempotency_key: &str, address: Option<&str>) -> Result<Dispatch>;
}

pub struct SandboxCarrier;

impl Carrier for SandboxCarrier {
    fn dispatch(&self, idempotency_key: &str, _address: Option<&str>) -> Result<Dispatch> {
        // Derived from the key, so a retried booking gets the same tracking number.
        let digest = Sha256::digest(idempotency_key.as_bytes());
        Ok(Dispatch {
            carrier: "sandbox".into(),
            tracking_number: format!("SBX{}", hex::encode(digest)[..16].to_uppercase()),
        })
    }
}
