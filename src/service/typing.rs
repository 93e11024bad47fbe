//! Typing indicators of one connection: the rule for when the room is told,
//! and when an indicator lapses by itself.
//!
//! An active indicator lapses `TYPING_TTL` after its last `active: true`
//! unless repeated. A repeat extends the lapse; it is told to the room
//! (restarting other clients' own 5 s windows) only when `TYPING_REPEAT`
//! has passed since the room was last told, so a client repeating "still
//! typing" many times a second costs the room one event per 2 s. Turning
//! off an indicator that is on is told once; turning off one that is not on
//! is silent. The connection owns a `Typing` and asks it;
//! `RoomService::typing` then asks the store, which applies the same 2 s
//! per user across all of the user's connections and nodes, and publishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A typing indicator lapses this long after its last `active: true`.
pub(crate) const TYPING_TTL: Duration = Duration::from_secs(5);
/// An indicator that stays on is told to the room at most this often, by
/// default (`--typing-repeat`).
pub const TYPING_REPEAT: Duration = Duration::from_secs(2);

/// One room's indicator while it is on.
#[derive(Debug, Clone, Copy)]
struct On {
    /// When it lapses unless repeated.
    lapse: Instant,
    /// When the room was last told it is on.
    told: Instant,
}

/// The rooms where one connection's typing indicator is on.
#[derive(Debug)]
pub struct Typing {
    /// Room → its indicator.
    on: HashMap<Arc<str>, On>,
    /// How often an indicator that stays on is told.
    repeat: Duration,
}

impl Default for Typing {
    fn default() -> Self {
        Typing::new(TYPING_REPEAT)
    }
}

impl Typing {
    /// No indicator on; one that stays on is told at most every `repeat`.
    pub fn new(repeat: Duration) -> Typing {
        Typing {
            on: HashMap::new(),
            repeat,
        }
    }

    /// Records `active` in `room` at `now`; whether the room must be told.
    pub fn set(&mut self, room: &Arc<str>, active: bool, now: Instant) -> bool {
        if !active {
            return self.on.remove(room).is_some();
        }
        let lapse = now + TYPING_TTL;
        match self.on.get_mut(room) {
            Some(on) if now < on.told + self.repeat => {
                on.lapse = lapse;
                false
            }
            Some(on) => {
                *on = On { lapse, told: now };
                true
            }
            None => {
                self.on.insert(room.clone(), On { lapse, told: now });
                true
            }
        }
    }

    /// The next moment an indicator lapses, if any is on.
    pub fn next_lapse(&self) -> Option<Instant> {
        self.on.values().map(|on| on.lapse).min()
    }

    /// Turns off every indicator lapsed by `now`; the rooms to tell.
    pub fn take_lapsed(&mut self, now: Instant) -> Vec<Arc<str>> {
        let lapsed: Vec<Arc<str>> = self
            .on
            .iter()
            .filter(|(_, on)| on.lapse <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in &lapsed {
            self.on.remove(room);
        }
        lapsed
    }

    /// Turns off the indicator in `room` (leaving it); whether it was on.
    pub fn clear(&mut self, room: &str) -> bool {
        self.on.remove(room).is_some()
    }

    /// Turns off every indicator (the connection ends); the rooms to tell.
    pub fn take_all(&mut self) -> Vec<Arc<str>> {
        self.on.drain().map(|(room, _)| room).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_extend_and_off_is_told_once() {
        let room: Arc<str> = Arc::from("r");
        let t0 = Instant::now();
        let mut typing = Typing::default();
        assert!(!typing.set(&room, false, t0), "off while off is silent");
        assert!(typing.set(&room, true, t0));
        assert_eq!(typing.next_lapse(), Some(t0 + TYPING_TTL));
        let t1 = t0 + Duration::from_secs(3);
        assert!(typing.set(&room, true, t1), "a repeat 2 s later is told");
        assert_eq!(typing.next_lapse(), Some(t1 + TYPING_TTL));
        assert!(typing.set(&room, false, t1));
        assert!(!typing.set(&room, false, t1));
        assert_eq!(typing.next_lapse(), None);
    }

    #[test]
    fn rapid_repeats_are_told_once_per_two_seconds() {
        let room: Arc<str> = Arc::from("r");
        let t0 = Instant::now();
        let mut typing = Typing::default();
        let told: Vec<u64> = (0..50u64)
            .filter(|i| typing.set(&room, true, t0 + Duration::from_millis(i * 100)))
            .collect();
        // At 0 s, 2 s and 4 s of a 5 s burst of ten repeats a second.
        assert_eq!(told, [0, 20, 40]);
        // Each repeat still pushed the lapse back.
        assert_eq!(
            typing.next_lapse(),
            Some(t0 + Duration::from_millis(4900) + TYPING_TTL)
        );
        // Turning it off is told at once, and a new start too.
        let t = t0 + Duration::from_millis(5000);
        assert!(typing.set(&room, false, t));
        assert!(typing.set(&room, true, t));
    }

    #[test]
    fn lapses_take_only_what_is_due() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let t0 = Instant::now();
        let mut typing = Typing::default();
        typing.set(&a, true, t0);
        typing.set(&b, true, t0 + Duration::from_secs(2));
        assert!(typing.take_lapsed(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(typing.take_lapsed(t0 + TYPING_TTL), vec![a.clone()]);
        assert_eq!(typing.next_lapse(), Some(t0 + Duration::from_secs(7)));
        assert!(typing.clear("b"));
        assert!(!typing.clear("a"));
        typing.set(&a, true, t0);
        assert_eq!(typing.take_all(), vec![a]);
        assert!(typing.take_all().is_empty());
    }
}
