//! `nostr`: relays, the operator, caches and the announcement (the node's key and its
//! endpoint are `node.key_file` and `node.public_endpoint`).

use std::time::Duration;

use serde::Deserialize;

use super::check::{Key, Problems};
use super::duration::{millis, seconds};
use super::ConfigError;
use crate::discovery::announcement::check_endpoint;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NostrSettings {
    pub relays: Vec<String>,
    pub operator_pubkey: String,
    pub allow_ws_loopback: bool,
    /// A REQ waits this long for a relay's EOSE.
    #[serde(rename = "query_timeout_ms", deserialize_with = "millis")]
    pub query_timeout: Duration,
    /// A down relay is waited for this long per query ...
    #[serde(rename = "connect_timeout_ms", deserialize_with = "millis")]
    pub connect_timeout: Duration,
    /// ... and redialled this often.
    #[serde(rename = "retry_interval_ms", deserialize_with = "millis")]
    pub retry_interval: Duration,
    /// How long a resolved announcement is remembered.
    #[serde(rename = "found_cache_seconds", deserialize_with = "seconds")]
    pub found_cache: Duration,
    /// How long a "not found" or invalid announcement is remembered.
    #[serde(rename = "not_found_cache_seconds", deserialize_with = "seconds")]
    pub not_found_cache: Duration,
    /// Lookups arriving within this window are asked of the relays together.
    #[serde(rename = "batch_window_ms", deserialize_with = "millis")]
    pub batch_window: Duration,
    pub max_authors_per_req: usize,
    pub parallel_reqs: usize,
    pub announce: AnnounceSettings,
    /// Events one relay may send for one discovery or follow-list REQ before it is closed.
    pub max_events_per_req: usize,
    /// Bytes of event JSON one relay may send for one such REQ before it is closed.
    pub max_bytes_per_req: usize,
}

/// `nostr.announce`: the fields of this node's kind 32001 announcement (its endpoint is
/// `node.public_endpoint`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceSettings {
    pub base_address: String,
    pub supported_tokens: Vec<String>,
    pub features: Vec<String>,
    pub operator_name: String,
    pub description: String,
}

impl NostrSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        for url in &self.relays {
            p.add(Key("nostr.relays").passes(check_endpoint(url, self.allow_ws_loopback)));
        }
        let op = self.operator_pubkey.trim();
        p.add(Key("nostr.operator_pubkey").ensure(
            op.is_empty() || nostr_sdk::prelude::PublicKey::parse(op).is_ok(),
            format!("`{op}` is not a public key (npub1… or 64 hex characters)"),
        ));
        p.add(Key("nostr.query_timeout_ms").nonzero(self.query_timeout));
        p.add(Key("nostr.connect_timeout_ms").nonzero(self.connect_timeout));
        p.add(Key("nostr.retry_interval_ms").nonzero(self.retry_interval));
        p.add(Key("nostr.found_cache_seconds").nonzero(self.found_cache));
        p.add(Key("nostr.not_found_cache_seconds").nonzero(self.not_found_cache));
        p.add(Key("nostr.batch_window_ms").nonzero(self.batch_window));
        p.add(Key("nostr.max_authors_per_req").between(self.max_authors_per_req, 1, 5000));
        p.add(Key("nostr.parallel_reqs").between(self.parallel_reqs, 1, 64));
        // A REQ asks for up to two announcements per author: an honest full answer fits.
        let full_answer = 2 * self.max_authors_per_req.max(1);
        p.add(Key("nostr.max_events_per_req").ensure(
            (full_answer..=1_000_000).contains(&self.max_events_per_req),
            format!(
                "must be between {full_answer} (2 × nostr.max_authors_per_req, one full \
                 answer) and 1000000"
            ),
        ));
        p.add(Key("nostr.max_bytes_per_req").between(
            self.max_bytes_per_req,
            64 * 1024,
            256 * 1024 * 1024,
        ));
        let a = &self.announce;
        for (key, list) in [
            (Key("nostr.announce.supported_tokens"), &a.supported_tokens),
            (Key("nostr.announce.features"), &a.features),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|t| t.is_empty() || t.contains(',') || t.contains(char::is_whitespace))
            {
                p.add(Err(key.invalid(format!(
                    "`{bad}` must be a non-empty word without commas"
                ))));
            }
        }
        p.finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use crate::discovery::bounds::ReqBounds;

    #[test]
    fn the_per_req_bounds_default_as_the_relays_do_and_are_checked() {
        let n = Settings::defaults().unwrap().nostr;
        assert_eq!(
            ReqBounds {
                max_events: n.max_events_per_req,
                max_bytes: n.max_bytes_per_req,
            },
            ReqBounds::default()
        );
        for (yaml, key, says) in [
            (
                "nostr: {max_authors_per_req: 300, max_events_per_req: 599}",
                "nostr.max_events_per_req",
                "between 600 (2 × nostr.max_authors_per_req",
            ),
            (
                "nostr: {max_events_per_req: 1000001}",
                "nostr.max_events_per_req",
                "and 1000000",
            ),
            (
                "nostr: {max_bytes_per_req: 1000}",
                "nostr.max_bytes_per_req",
                "between 65536 and 268435456",
            ),
        ] {
            let err = Settings::from_yaml_overrides(yaml).expect_err(yaml);
            assert_eq!(err.key(), Some(key), "{yaml}: {err}");
            assert!(err.to_string().contains(says), "{yaml}: {err}");
        }
        Settings::from_yaml_overrides("nostr: {max_authors_per_req: 300, max_events_per_req: 600}")
            .unwrap();
    }
}
