//! `persistence`: how peer records are batched into the database.

use std::time::Duration;

use serde::Deserialize;

use super::check::{Key, Problems};
use super::duration::millis;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceSettings {
    /// A batch is written this often (or sooner, once `max_batch` peers changed).
    #[serde(rename = "flush_interval_ms", deserialize_with = "millis")]
    pub flush_interval: Duration,
    pub max_batch: usize,
    /// A failed write is retried after this, doubling up to `retry_max_delay`.
    #[serde(rename = "retry_initial_delay_ms", deserialize_with = "millis")]
    pub retry_initial_delay: Duration,
    #[serde(rename = "retry_max_delay_ms", deserialize_with = "millis")]
    pub retry_max_delay: Duration,
    /// How long a write the node waits on before going on (a channel transaction's hash,
    /// made durable before the transaction is broadcast) may take; past it the peer waits
    /// for the database (no attempt counted) and the transaction is never sent.
    #[serde(rename = "durable_write_timeout_ms", deserialize_with = "millis")]
    pub durable_write_timeout: Duration,
    /// The newest state changes kept per peer in `peer_transitions` (its history).
    pub history_per_peer: usize,
}

impl Default for PersistenceSettings {
    /// The values of `config/default.yaml`.
    fn default() -> Self {
        PersistenceSettings {
            flush_interval: Duration::from_millis(5),
            max_batch: 512,
            retry_initial_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_millis(5_000),
            durable_write_timeout: Duration::from_millis(30_000),
            history_per_peer: 100,
        }
    }
}

impl PersistenceSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        p.add(Key("persistence.flush_interval_ms").between(
            self.flush_interval.as_millis(),
            1,
            60_000,
        ));
        p.add(Key("persistence.max_batch").nonzero(self.max_batch));
        p.add(Key("persistence.retry_initial_delay_ms").nonzero(self.retry_initial_delay));
        p.add(Key("persistence.retry_max_delay_ms").ensure(
            self.retry_max_delay >= self.retry_initial_delay,
            "must not be less than persistence.retry_initial_delay_ms",
        ));
        p.add(Key("persistence.durable_write_timeout_ms").between(
            self.durable_write_timeout.as_millis(),
            100,
            3_600_000,
        ));
        p.add(Key("persistence.history_per_peer").between(self.history_per_peer, 1, 10_000));
        p.finish()
    }
}
