//! Waiting for something the node does on its own: one poll-with-deadline ([`poll`]) and
//! the shapes the tests use it in.
//!
//! Time is tokio's clock, so a test that paused it waits in simulated time and one that did
//! not waits in real time. [`holds_within_wall_clock`] is the exception, for work done off
//! the runtime while a paused clock must not move.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `check` until it answers `Ok`, sleeping `every` between calls, for at most
/// `limit`; then gives back the last `Err` (what was seen instead).
pub async fn poll<T, E, F, Fut>(limit: Duration, every: Duration, check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    poll_on(
        limit,
        || tokio::time::Instant::now().into_std(),
        || tokio::time::sleep(every),
        check,
    )
    .await
}

/// [`poll`] on any clock: `now` reads it, `pause` waits between two calls of `check`.
async fn poll_on<T, E, F, Fut, P, PFut>(
    limit: Duration,
    now: impl Fn() -> Instant,
    mut pause: P,
    mut check: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    P: FnMut() -> PFut,
    PFut: Future<Output = ()>,
{
    let deadline = now() + limit;
    loop {
        let seen = match check().await {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if now() >= deadline {
            return Err(seen);
        }
        pause().await;
    }
}

/// Waits (polling every 20 ms, at most `limit`) until `check` yields a value; panics
/// naming `what` if it does not.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(limit, Duration::from_millis(20), || {
        let next = check();
        async move { next.await.ok_or(()) }
    })
    .await
    .unwrap_or_else(|()| panic!("timed out waiting for {what}"))
}

/// Whether `done` comes to hold within `limit` of real time. Between looks it yields to the
/// runtime and sleeps the thread, never a timer: a paused tokio clock stays where it is
/// while the actors under test (and the database threads they wait on) get on.
pub async fn holds_within_wall_clock(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let pause = || async {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    };
    let check = || std::future::ready(if done() { Ok(()) } else { Err(()) });
    poll_on(limit, Instant::now, pause, check).await.is_ok()
}
