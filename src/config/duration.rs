//! Durations as operators write them: a whole number in the unit the key's name ends with
//! (`…_seconds`, `…_ms`). The settings hold them as [`Duration`]s, so no caller converts
//! units; a field keeps the operator's key through `#[serde(rename = …)]`:
//!
//! ```text
//! #[serde(rename = "heartbeat_interval_seconds", deserialize_with = "seconds")]
//! pub heartbeat_interval: Duration,
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A `…_seconds` key: whole seconds.
pub(crate) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A `…_ms` key: whole milliseconds.
pub(crate) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}
