//! The threads outbound sessions run on. Each dial starts on the next of them in turn, and
//! what it spawns stays there: the socket's read and write loops, the authentication's
//! signatures, the requests the session serves. A node's sessions so use every core, while
//! its actors (and so every decision about peers) stay on the one thread they share.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_rt::Arbiter;

/// A fixed set of session threads (actix arbiters), stopped when dropped.
pub struct SessionThreads {
    arbiters: Vec<Arbiter>,
    next: AtomicUsize,
}

impl SessionThreads {
    /// `n` threads (at least one). Must be called inside an actix system.
    pub fn new(n: usize) -> SessionThreads {
        SessionThreads {
            arbiters: (0..n.max(1)).map(|_| Arbiter::new()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    /// Runs the future `make` builds on the next thread and brings its output back;
    /// `None` when the threads are stopping. Dropping the returned future drops the one
    /// running there at its next step (a cancelled dial closes its socket).
    pub async fn run<F, Fut, T>(&self, make: F) -> Option<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = self.arbiters[i].spawn_fn(move || {
            actix_rt::spawn(async move {
                let mut tx = tx;
                let work = make();
                tokio::select! {
                    out = work => {
                        let _ = tx.send(out);
                    }
                    _ = tx.closed() => {}
                }
            });
        });
        if !started {
            return None;
        }
        rx.await.ok()
    }
}

impl Drop for SessionThreads {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signals when dropped.
    struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    #[actix_rt::test]
    async fn work_runs_on_the_session_threads_in_turn_and_comes_back() {
        let threads = SessionThreads::new(2);
        let here = std::thread::current().id();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let id = threads
                .run(|| async { std::thread::current().id() })
                .await
                .unwrap();
            assert_ne!(id, here);
            seen.push(id);
        }
        assert_ne!(seen[0], seen[1], "one thread after the other");
        assert_eq!((seen[0], seen[1]), (seen[2], seen[3]));
    }

    #[actix_rt::test]
    async fn dropping_the_caller_drops_the_work_running_there() {
        let threads = SessionThreads::new(1);
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let run = threads.run(move || async move {
            let _guard = Dropped(Some(dropped_tx));
            let _ = started_tx.send(());
            std::future::pending::<()>().await
        });
        tokio::select! {
            _ = run => panic!("pending work finished"),
            _ = started => {}
        }
        // `run` is dropped here: the work on the other thread is dropped with it.
        tokio::time::timeout(std::time::Duration::from_secs(10), dropped)
            .await
            .expect("the work was dropped")
            .unwrap();
    }
}
