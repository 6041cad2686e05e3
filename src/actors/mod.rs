//! The actors. Each module holds one actor: its state, its messages and its handlers; the
//! adapters reach them only through [`directory::SupervisorDirectory`], the
//! [`crate::ports::PeerDirectory`] port.

pub mod clock;
pub mod dial_gate;
pub mod dial_queue;
pub mod directory;
pub mod notification;
pub mod outage;
pub mod peer;
pub mod persistence;
pub mod supervisor;
