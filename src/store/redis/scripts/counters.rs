//! The arguments and replies of the counter scripts: typing indicators and
//! the abuse-limit windows.

use redis::Value;

use super::{Bound, ScriptArgs, ScriptReply, corrupt};
use crate::error::StoreResult;

/// `typing.lua`: set or clear a typing indicator.
pub(in crate::store::redis) struct Typing {
    /// `typing:{R}:USER`.
    pub(in crate::store::redis) key: String,
    /// Set (true) or clear.
    pub(in crate::store::redis) active: bool,
    /// How long a set indicator lives, ms.
    pub(in crate::store::redis) ttl_ms: u64,
    /// How long after telling the room a set only extends it, ms.
    pub(in crate::store::redis) repeat_ms: u64,
}

impl ScriptArgs for Typing {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.key)
            .arg(if self.active { "1" } else { "0" })
            .arg(self.ttl_ms.max(1))
            .arg(self.repeat_ms);
    }
}

/// Whether `typing.lua` says to tell the room.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) struct Tell(pub(in crate::store::redis) bool);

impl ScriptReply for Tell {
    fn parse(value: Value) -> StoreResult<Self> {
        redis::from_redis_value::<i64>(value)
            .map(|n| Tell(n > 0))
            .map_err(corrupt)
    }
}

/// `limit.lua`: count one more, or read, a fixed-window counter.
pub(in crate::store::redis) struct Limit {
    /// `limit:NAME`.
    pub(in crate::store::redis) key: String,
    /// Count one more (a window starts with the first), or only read.
    pub(in crate::store::redis) count: bool,
    /// The window, ms.
    pub(in crate::store::redis) window_ms: u64,
}

impl ScriptArgs for Limit {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.key)
            .arg(if self.count { "count" } else { "peek" })
            .arg(self.window_ms.max(1));
    }
}

/// What `limit.lua` read: the window's count and the ms until it ends.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) struct LimitReply {
    /// Counted in the window.
    pub(in crate::store::redis) count: u64,
    /// Until the window ends, ms.
    pub(in crate::store::redis) resets_in_ms: u64,
}

impl ScriptReply for LimitReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (count, resets_in_ms): (u64, u64) = redis::from_redis_value(value).map_err(corrupt)?;
        Ok(LimitReply {
            count,
            resets_in_ms,
        })
    }
}
