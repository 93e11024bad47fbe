//! `CacheStore` and `StoreHealth` in memory: the general cache and named
//! locks on the engine's clock; the health check always answers.

use std::time::Duration;

use async_trait::async_trait;

use super::MemoryStore;
use crate::error::StoreResult;
use crate::store::{CacheStore, StoreHealth};

#[async_trait]
impl CacheStore for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let now = self.now();
        Ok(self
            .state()
            .cache
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        let now = self.now();
        let mut st = self.state();
        st.cache.retain(|_, (_, exp)| *exp > now);
        st.cache.insert(
            key.to_owned(),
            (value.to_vec(), now + ttl.as_millis() as u64),
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.state().cache.remove(key);
        Ok(())
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> StoreResult<bool> {
        let now = self.now();
        let mut st = self.state();
        if st.locks.get(name).is_some_and(|exp| *exp > now) {
            return Ok(false);
        }
        st.locks
            .insert(name.to_owned(), now + ttl.as_millis() as u64);
        Ok(true)
    }
}

#[async_trait]
impl StoreHealth for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
