//! A connection's outbound queue: bounded, many senders (the hub's fan-out,
//! the connection's own replies), one receiver (the connection's writer).
//!
//! Why not `tokio::sync::mpsc`: an idle connection is what a chat node
//! holds most of, and a tokio channel costs about 1 KiB each whether used
//! or not (its cache-padded state and a first block of 32 slots). This one
//! is a `VecDeque` under a mutex, a `Notify` and two counters, about 150
//! bytes at rest: the deque grows with a burst and gives its memory back
//! once drained. The operations the gateway uses keep tokio's shapes
//! (`try_send` with `Full`/`Closed`, `recv`, `try_recv`).
//!
//! `try_send` never waits: a full queue means a slow consumer, which the
//! caller closes. The lock is held only to push or pop one item.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

/// Above this capacity a drained queue gives its memory back.
const KEEP: usize = 8;

/// What senders and the receiver share.
#[derive(Debug)]
struct Shared<T> {
    items: Mutex<VecDeque<T>>,
    cap: usize,
    /// Wakes the receiver: an item came, or the last sender went.
    ready: Notify,
    /// The receiver is gone: sends fail with `Closed`.
    closed: AtomicBool,
    senders: AtomicUsize,
}

impl<T> Shared<T> {
    fn items(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue holding at most `cap` items.
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        items: Mutex::new(VecDeque::new()),
        cap,
        ready: Notify::new(),
        closed: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// The sending side; clones share the queue.
#[derive(Debug)]
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ready.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(item));
        }
        {
            let mut items = self.0.items();
            if items.len() >= self.0.cap {
                return Err(TrySendError::Full(item));
            }
            items.push_back(item);
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

/// The receiving side.
#[derive(Debug)]
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and the queue is
    /// empty. Cancel-safe: an item is taken only when returned.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            // A send between the check and here left a permit: no wake-up
            // is lost.
            self.0.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut items = self.0.items();
        match items.pop_front() {
            Some(item) => {
                if items.is_empty() && items.capacity() > KEEP {
                    items.shrink_to(KEEP);
                }
                Ok(item)
            }
            None if self.0.senders.load(Ordering::Acquire) == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        // What was queued goes now, not with the last sender.
        let drained = std::mem::take(&mut *self.0.items());
        drop(drained);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bounded_in_order_and_closed_without_a_receiver() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).expect("room");
        tx.clone().try_send(2).expect("room");
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(3).expect("room again");
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(rx);
        assert!(matches!(tx.try_send(4), Err(TrySendError::Closed(4))));
    }

    #[tokio::test]
    async fn recv_waits_for_a_send_and_ends_with_the_last_sender() {
        let (tx, mut rx) = channel(4);
        let other = tx.clone();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            let end = rx.recv().await;
            (first, second, end)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send("a").expect("sent");
        other.try_send("b").expect("sent");
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(other);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("recv woke up")
            .expect("task");
        assert_eq!(got, (Some("a"), Some("b"), None));
    }

    #[tokio::test]
    async fn a_recv_dropped_by_a_select_loses_nothing() {
        let (tx, mut rx) = channel(64);
        for round in 0..50 {
            // The recv loses the race against a ready branch, then the item
            // comes: the next recv still gets it.
            tokio::select! {
                biased;
                _ = std::future::ready(()) => {}
                _ = rx.recv() => panic!("nothing was queued"),
            }
            tx.try_send(round).expect("sent");
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("not lost");
            assert_eq!(got, Some(round));
        }
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let (tx, mut rx) = channel(1024);
        for i in 0..500 {
            tx.try_send(i).expect("room");
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.0.items().capacity() <= KEEP);
        // Dropping the receiver drops what is queued at once.
        let item = Arc::new(());
        tx.try_send(0).expect("room");
        let (tx2, rx2) = channel(4);
        tx2.try_send(item.clone()).expect("room");
        drop(rx2);
        assert_eq!(Arc::strong_count(&item), 1);
    }
}
