//! The drivers' one source of time: wall-clock [`Timestamp`]s derived from actix's
//! (tokio's) monotonic clock. Under `tokio::time::pause` the whole node runs on simulated
//! time, and deadlines the lifecycle hands out stay comparable with stored timestamps.

use actix::clock::Instant;

use crate::lifecycle::Timestamp;

#[derive(Debug, Clone, Copy)]
pub struct NodeClock {
    wall_at_start: Timestamp,
    instant_at_start: Instant,
}

impl NodeClock {
    /// Anchors the monotonic clock to the system's wall clock, now.
    pub fn system() -> Self {
        Self::anchored_at(Timestamp::now_system())
    }

    /// Anchors the monotonic clock to a chosen wall-clock time (tests, benchmarks).
    pub fn anchored_at(wall: Timestamp) -> Self {
        NodeClock {
            wall_at_start: wall,
            instant_at_start: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.wall_at_start + self.instant_at_start.elapsed()
    }
}
