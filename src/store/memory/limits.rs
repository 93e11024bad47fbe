//! `LimitStore` in memory: fixed-window counters on the engine's clock.

use std::time::Duration;

use async_trait::async_trait;

use super::MemoryStore;
use crate::error::StoreResult;
use crate::store::{Count, LimitStore};

#[async_trait]
impl LimitStore for MemoryStore {
    async fn count(&self, name: &str, window: Duration) -> StoreResult<Count> {
        let now = self.now();
        let mut st = self.state();
        // Forget finished windows, so the map holds only live counters.
        st.limits.retain(|_, (_, ends)| *ends > now);
        let (count, ends) = st
            .limits
            .entry(name.to_owned())
            .or_insert((0, now + (window.as_millis() as u64).max(1)));
        *count += 1;
        Ok(Count {
            count: *count,
            resets_in: Duration::from_millis(*ends - now),
        })
    }

    async fn peek(&self, name: &str) -> StoreResult<Count> {
        let now = self.now();
        Ok(match self.state().limits.get(name) {
            Some((count, ends)) if *ends > now => Count {
                count: *count,
                resets_in: Duration::from_millis(ends - now),
            },
            _ => Count {
                count: 0,
                resets_in: Duration::ZERO,
            },
        })
    }
}
