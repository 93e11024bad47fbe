//! The per-minute abuse limits (PROTOCOL 1.1, "Abuse limits"): what one
//! user, or one client address, may cost a deployment.
//!
//! - `room.create`: at most `--room-create-per-min` (30) per user.
//! - `room.join` by code: at most `--code-miss-per-min` (10) unknown codes
//!   per user; once past it every join by code is `rate_limited` until the
//!   window has passed, a right code too, so that guessing cannot tell
//!   "unknown" from "limited".
//! - Per client address, the same limits times 6, when the address is
//!   known (`--trusted-proxies`) or the operator asks (`--address-limits`).
//!   An IPv6 client counts by its /64, the block one host usually holds.
//!
//! The counters are fixed windows of a minute in the store (`LimitStore`),
//! so the limits hold across nodes. 0 turns a limit off.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::store::{Count, LimitStore};

/// The window of every limit.
const WINDOW: Duration = Duration::from_secs(60);
/// How much more an address may do than one user.
const ADDRESS_FACTOR: u64 = 6;

/// The limits' settings.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// `room.create` per user per minute (0: no limit).
    pub room_create_per_min: u32,
    /// Unknown join codes per user per minute (0: no limit).
    pub code_miss_per_min: u32,
    /// Whether the limits also count per client address.
    pub per_address: bool,
}

/// One kind of limit, with its counter names and metric labels.
#[derive(Debug, Clone, Copy)]
struct Kind {
    /// Counter name prefix, per user.
    user_key: &'static str,
    /// Counter name prefix, per address.
    address_key: &'static str,
    /// Metric label, per user.
    user_label: &'static str,
    /// Metric label, per address.
    address_label: &'static str,
    /// What the client is told.
    message: &'static str,
}

const CREATE: Kind = Kind {
    user_key: "create:u:",
    address_key: "create:a:",
    user_label: "room_create_user",
    address_label: "room_create_address",
    message: "too many rooms created; try again later",
};

const CODE_MISS: Kind = Kind {
    user_key: "code_miss:u:",
    address_key: "code_miss:a:",
    user_label: "code_miss_user",
    address_label: "code_miss_address",
    message: "too many joins by code; try again later",
};

/// How `Limits::guard` treats a counter.
#[derive(Debug, Clone, Copy)]
enum Gate {
    /// Count this attempt; refuse once the count is past the limit.
    Count,
    /// Only read; refuse once the count has reached the limit (the attempt
    /// is counted later, if it misses).
    Peek,
}

/// The abuse limits of the services.
#[derive(Clone)]
pub struct Limits {
    /// The counters.
    store: Arc<dyn LimitStore>,
    /// The settings.
    settings: LimitSettings,
    /// `huddle_abuse_limited_total`.
    metrics: Arc<Metrics>,
}

impl Limits {
    /// Limits counted in `store`.
    pub fn new(
        store: Arc<dyn LimitStore>,
        settings: LimitSettings,
        metrics: Arc<Metrics>,
    ) -> Limits {
        Limits {
            store,
            settings,
            metrics,
        }
    }

    /// Counts a `room.create` by `user` from `address`; refused past the
    /// limit.
    pub async fn room_create(
        &self,
        user: &str,
        address: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let per_min = u64::from(self.settings.room_create_per_min);
        self.guard(CREATE, per_min, user, address, Gate::Count)
            .await
    }

    /// Before a join by code: refused once `user` (or `address`) is past
    /// the unknown-code limit, whatever the code.
    pub async fn code_join(&self, user: &str, address: Option<IpAddr>) -> Result<(), ServiceError> {
        let per_min = u64::from(self.settings.code_miss_per_min);
        self.guard(CODE_MISS, per_min, user, address, Gate::Peek)
            .await
    }

    /// Counts an unknown code tried by `user` from `address`. A counter
    /// that cannot be written costs only the count: it is logged.
    pub async fn code_missed(&self, user: &str, address: Option<IpAddr>) {
        if self.settings.code_miss_per_min == 0 {
            return;
        }
        for (name, _) in self.counters(CODE_MISS, user, address) {
            if let Err(e) = self.store.count(&name, WINDOW).await {
                tracing::warn!(error = %e, "could not count an unknown join code");
            }
        }
    }

    /// Applies `kind`'s limit of `per_min` (times 6 for the address) to
    /// `user` and `address`, the user's counter first; 0 is no limit.
    async fn guard(
        &self,
        kind: Kind,
        per_min: u64,
        user: &str,
        address: Option<IpAddr>,
        gate: Gate,
    ) -> Result<(), ServiceError> {
        if per_min == 0 {
            return Ok(());
        }
        for (name, by_address) in self.counters(kind, user, address) {
            let limit = if by_address {
                per_min * ADDRESS_FACTOR
            } else {
                per_min
            };
            let (count, over) = match gate {
                Gate::Count => {
                    let c = self.store.count(&name, WINDOW).await?;
                    (c, c.count > limit)
                }
                Gate::Peek => {
                    let c = self.store.peek(&name).await?;
                    (c, c.count >= limit)
                }
            };
            if over {
                return Err(self.refuse(kind, by_address, count));
            }
        }
        Ok(())
    }

    /// The counter names of `kind` for `user` and, when per-address limits
    /// are on, `address`; each with whether it is the address's.
    fn counters(&self, kind: Kind, user: &str, address: Option<IpAddr>) -> Vec<(String, bool)> {
        let mut names = vec![(format!("{}{user}", kind.user_key), false)];
        if let Some(block) = self.block(address) {
            names.push((format!("{}{block}", kind.address_key), true));
        }
        names
    }

    /// The address block an address counts under, when per-address limits
    /// are on: the address itself for IPv4, its /64 for IPv6.
    fn block(&self, address: Option<IpAddr>) -> Option<String> {
        if !self.settings.per_address {
            return None;
        }
        Some(address_block(address?))
    }

    fn refuse(&self, kind: Kind, by_address: bool, count: Count) -> ServiceError {
        let label = if by_address {
            kind.address_label
        } else {
            kind.user_label
        };
        self.metrics.abuse_limited(label);
        tracing::info!(limit = label, count = count.count, "abuse limit reached");
        ServiceError::RateLimited {
            message: kind.message.to_owned(),
            retry_after: count.resets_in.max(Duration::from_millis(1)),
        }
    }
}

/// The block an address counts under: an IPv4 address (IPv4-mapped IPv6
/// included) as itself, an IPv6 address by its /64.
pub fn address_block(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::events::EventSink;
    use crate::store::{MemoryStore, StoreSettings};

    struct NoSink;
    impl EventSink for NoSink {
        fn deliver(&self, _: &str, _: &[u8]) {}
    }

    fn limits(create: u32, miss: u32, per_address: bool) -> (Limits, Arc<Metrics>) {
        let store = Arc::new(MemoryStore::new(StoreSettings::default(), Arc::new(NoSink)));
        let metrics = Arc::new(Metrics::new());
        let settings = LimitSettings {
            room_create_per_min: create,
            code_miss_per_min: miss,
            per_address,
        };
        (Limits::new(store, settings, metrics.clone()), metrics)
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    #[tokio::test]
    async fn creating_past_the_limit_is_rate_limited_with_a_retry_time() {
        let (l, metrics) = limits(3, 10, false);
        for _ in 0..3 {
            l.room_create("ann", HOME).await.expect("within");
        }
        let err = l.room_create("ann", HOME).await.expect_err("past it");
        assert_eq!(err.code(), ErrorCode::RateLimited);
        let ServiceError::RateLimited { retry_after, .. } = err else {
            panic!("a rate limit")
        };
        assert!(retry_after > Duration::ZERO && retry_after <= WINDOW);
        // Another user is not affected, and per-address limits are off.
        l.room_create("bob", HOME).await.expect("bob is fine");
        let text = metrics.render();
        assert!(
            text.contains(r#"huddle_abuse_limited_total{limit="room_create_user"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_address_may_do_six_times_what_a_user_may() {
        let (l, _) = limits(1, 10, true);
        for user in 0..6 {
            l.room_create(&format!("u{user}"), HOME)
                .await
                .expect("within");
        }
        let err = l
            .room_create("u6", HOME)
            .await
            .expect_err("the address is spent");
        assert_eq!(err.code(), ErrorCode::RateLimited);
        l.room_create("u7", None)
            .await
            .expect("no address, no address limit");
    }

    #[tokio::test]
    async fn past_the_misses_every_join_by_code_is_limited() {
        let (l, _) = limits(30, 2, false);
        for _ in 0..2 {
            l.code_join("ann", HOME).await.expect("may try");
            l.code_missed("ann", HOME).await;
        }
        let err = l.code_join("ann", HOME).await.expect_err("limited");
        assert_eq!(err.code(), ErrorCode::RateLimited);
        l.code_join("bob", HOME).await.expect("bob may try");
    }

    #[tokio::test]
    async fn zero_turns_a_limit_off() {
        let (l, _) = limits(0, 0, true);
        for _ in 0..100 {
            l.room_create("ann", HOME).await.expect("no limit");
            l.code_missed("ann", HOME).await;
            l.code_join("ann", HOME).await.expect("no limit");
        }
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(address_block(a), address_block(b));
        assert_ne!(address_block(a), address_block(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(address_block(mapped), "192.0.2.7");
    }
}
