//! The actors of the design card. Each module holds one actor: its state, its messages and
//! its handlers.

pub mod clock;
pub mod peer;
pub mod persistence;
pub mod supervisor;
