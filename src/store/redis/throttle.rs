//! The `active_rooms` bump throttle: a busy room is moved forward in the
//! listing at most once a second per node, so it costs one `ZADD` a second
//! rather than one per message. The room hash's `last_activity` stays exact;
//! the listing order is exact to a second.

use std::collections::HashMap;

/// How often a node moves a busy room forward in `active_rooms`.
const BUMP_EVERY_MS: u64 = 1000;
/// Entries kept before old ones are dropped.
const MAX_TRACKED: usize = 4096;

/// Rooms this node recently moved forward in `active_rooms`.
#[derive(Default)]
pub(super) struct Bumps {
    /// room id → when it was last bumped (Unix ms).
    last: std::sync::Mutex<HashMap<String, u64>>,
}

impl Bumps {
    /// Whether `room` is due a bump at `now` (ms), recording it if so.
    pub(super) fn due(&self, room: &str, now: u64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(room)
            .is_some_and(|at| now < at.saturating_add(BUMP_EVERY_MS))
        {
            return false;
        }
        if last.len() >= MAX_TRACKED {
            last.retain(|_, at| now < at.saturating_add(BUMP_EVERY_MS));
        }
        last.insert(room.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_bumped_at_most_once_a_second_per_node() {
        let bumps = Bumps::default();
        assert!(bumps.due("r1", 10_000));
        assert!(!bumps.due("r1", 10_999));
        assert!(bumps.due("r2", 10_999), "rooms are throttled separately");
        assert!(bumps.due("r1", 11_000));
        // Old entries are dropped once there are many.
        for i in 0..5000u64 {
            assert!(bumps.due(&format!("room-{i}"), 20_000 + i));
        }
        let kept = bumps.last.lock().expect("lock").len();
        assert!(kept < 5000, "{kept} entries kept");
        assert!(!bumps.due("room-4999", 24_999));
    }
}
