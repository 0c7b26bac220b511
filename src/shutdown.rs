//! The worker-local shutdown signal.
//!
//! Every open connection waits on it alongside its read, so it is polled on
//! the per-message path: a listener checks a flag and keeps one waker in a
//! worker-local slab (no lock, no atomic, nothing shared with other cores).
//! Crossing cores happens once, when the runtime tells each worker to stop.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

#[derive(Default)]
pub struct Shutdown {
    fired: Cell<bool>,
    /// One slot per live listener; `None` until its first poll.
    waiters: RefCell<Slab<Option<Waker>>>,
}

impl Shutdown {
    pub fn new() -> Rc<Self> {
        Rc::default()
    }

    pub fn listen(self: &Rc<Self>) -> Listener {
        let key = self.waiters.borrow_mut().insert(None);
        Listener {
            shutdown: self.clone(),
            key,
        }
    }

    /// Wakes every listener; later polls complete at once.
    pub fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, w)| w.take())
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }
}

/// Completes when the worker shuts down. Owned by one connection task.
pub struct Listener {
    shutdown: Rc<Shutdown>,
    key: usize,
}

impl Future for Listener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.fired.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.shutdown.waiters.borrow_mut();
        let slot = &mut waiters[self.key];
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.waiters.borrow_mut().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_wakes_listeners_and_drop_frees_slots() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let shutdown = Shutdown::new();
        let a = shutdown.listen();
        let b = shutdown.listen();
        drop(b);
        assert_eq!(shutdown.waiters.borrow().len(), 1);
        let s = shutdown.clone();
        rt.block_on(async move {
            let waiting = tokio::task::LocalSet::new();
            waiting
                .run_until(async move {
                    let task = tokio::task::spawn_local(a);
                    tokio::task::yield_now().await;
                    s.fire();
                    task.await.unwrap();
                })
                .await;
        });
        assert!(shutdown.is_fired());
        assert_eq!(shutdown.waiters.borrow().len(), 0);
    }
}
