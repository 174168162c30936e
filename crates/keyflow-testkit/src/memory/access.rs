//! [`Tokens`] and [`Policies`] in memory.

use super::*;
use keyflow_kms::keystore::{Policies, Tokens};

impl State {
    fn insert_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        if self.tokens.contains_key(&token.id) {
            return Err(StoreError::Conflict(format!(
                "refused: a token with id {} exists",
                token.id
            )));
        }
        self.tokens.insert(token.id.clone(), token.clone());
        Ok(())
    }

    fn list_tokens(&self) -> Vec<TokenRecord> {
        let mut tokens: Vec<TokenRecord> = self.tokens.values().cloned().collect();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        tokens
    }

    fn revoke_token(&mut self, id: &str, now: i64) -> bool {
        match self.tokens.get_mut(id) {
            Some(t) if t.revoked_at.is_none() => {
                t.revoked_at = Some(now);
                true
            }
            _ => false,
        }
    }

    fn set_policy(&mut self, purpose: &Purpose, policy: &Policy) -> Result<(), StoreError> {
        // The SQL schema's checks (`Policy::validate` is the caller's, and stricter).
        if policy.rotation_days == 0 || policy.max_encryptions == 0 {
            return Err(StoreError::Conflict(
                "refused: a policy needs rotation_days and max_encryptions of 1 or more".into(),
            ));
        }
        let policy = Policy {
            max_encryptions: policy.max_encryptions.min(MAX_COUNT),
            ..*policy
        };
        self.policies.insert(purpose.clone(), policy);
        Ok(())
    }
}

#[async_trait]
impl Tokens for MemoryKeystore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.sealed()?;
        self.with(|s| s.insert_token(token))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.sealed()?;
        self.token_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.with(|s| s.list_tokens()))
    }

    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| s.revoke_token(id, now)))
    }
}

#[async_trait]
impl Policies for MemoryKeystore {
    async fn get_policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| s.policies.get(purpose).copied()))
    }

    async fn set_policy(&self, purpose: &Purpose, policy: &Policy) -> Result<(), StoreError> {
        self.sealed()?;
        self.with(|s| s.set_policy(purpose, policy))
    }

    async fn list_policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| {
            s.policies
                .iter()
                .map(|(purpose, policy)| (purpose.clone(), *policy))
                .collect()
        }))
    }
}
