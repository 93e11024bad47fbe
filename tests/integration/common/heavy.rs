//! Heavy tests of different topics never run at the same time.
//!
//! All topics share one test binary, so the harness may run any two tests
//! side by side (two threads on a two-core machine). A few tests would
//! disturb a heavy test of another topic: the ones that push hundreds of
//! messages or a flood of frames through the nodes, start nginx and three
//! nodes, run Redis over TLS, or kill, freeze or restart Redis and then
//! assert that the nodes noticed within a deadline. Each such test takes
//! [`heavy`] first, naming its topic, and holds the guard to its end.
//!
//! Heavy tests of the same topic may still overlap each other, as they did
//! when each topic was its own test binary; a light test may run beside
//! any of them.

use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// Which topic holds the heavy slot, and how many of its tests.
#[derive(Default)]
struct Slot {
    /// The topic (module path) whose heavy tests run now; `None` when no
    /// heavy test runs.
    topic: Option<&'static str>,
    /// How many heavy tests of that topic run now.
    running: usize,
}

/// The slot itself, shared by every test of the binary.
static SLOT: Mutex<Slot> = Mutex::new(Slot {
    topic: None,
    running: 0,
});

/// Wakes the heavy tests that wait for the slot when it is freed. It works
/// across the tests' separate tokio runtimes.
static FREED: Notify = Notify::const_new();

/// Holds the heavy slot for one test; frees it on drop, also when the test
/// panics and unwinds.
pub(crate) struct HeavyGuard {
    /// Nothing to keep: the guard only marks that the slot is held.
    _private: (),
}

impl Drop for HeavyGuard {
    fn drop(&mut self) {
        let mut slot = SLOT.lock().unwrap_or_else(PoisonError::into_inner);
        slot.running -= 1;
        if slot.running == 0 {
            slot.topic = None;
            FREED.notify_waiters();
        }
    }
}

/// Waits until no heavy test of another topic runs. Call it first in the
/// test, with the test module's path, and bind the guard
/// (`let _heavy = heavy(module_path!()).await;`) so it is dropped last,
/// after the test's nodes and Redis servers are gone.
pub(crate) async fn heavy(topic: &'static str) -> HeavyGuard {
    loop {
        let freed = {
            let mut slot = SLOT.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.topic.is_none_or(|held| held == topic) {
                slot.topic = Some(topic);
                slot.running += 1;
                return HeavyGuard { _private: () };
            }
            // Registered before the lock is released, so a slot freed
            // between here and the await still wakes this test.
            FREED.notified()
        };
        freed.await;
    }
}
