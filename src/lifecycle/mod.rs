//! The peer lifecycle, sans-IO: states and their table ([`state`]), the per-peer logic
//! ([`peer::PeerLifecycle`]) and its deadlines (`timer`, one table keyed by kind), backoff
//! ([`backoff`]), priority ([`priority`]), the durable record ([`record`]) and the time type
//! ([`time`]). Nothing here does IO or reads a clock.

pub mod backoff;
pub mod peer;
pub mod priority;
pub mod record;
pub mod state;
pub mod time;
mod timer;

pub use peer::{
    Action, Announcement, Event, Fault, LifecycleConfig, LifecycleError, PeerLifecycle,
};
pub use record::{EventCursor, PeerRecord};
pub use state::{PeerIntent, PeerState};
pub use time::Timestamp;
