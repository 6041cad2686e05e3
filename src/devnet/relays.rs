//! The devnet's Nostr relays: nostr-relay-builder's relay in this process on a fixed
//! loopback port, its events kept in memory while it runs and written to a JSON-lines file
//! under DIR when it stops (and read back when it starts), so a second `devnet` on the same
//! DIR finds the notes and follow lists of the first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nostr_relay_builder::prelude::{
    Event, Filter, JsonUtil, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase,
    RateLimit, RelayBuilder,
};

use super::DevnetError;

/// Events one relay answers a REQ with at most when the REQ names no limit (the node
/// reads the operator relay in pages of `events.stored_page_size`).
const DEFAULT_FILTER_LIMIT: usize = 10_000;

/// One embedded relay.
pub struct EmbeddedRelay {
    /// What it is for (`discovery`, or the node whose operator relay it is).
    pub name: String,
    pub port: u16,
    relay: LocalRelay,
    db: Arc<MemoryDatabase>,
    file: PathBuf,
    /// Whether its file existed when it started (a relay of an earlier devnet).
    pub resumed: bool,
}

impl EmbeddedRelay {
    /// Loads `file` (if it exists) and serves it on `127.0.0.1:port`.
    pub async fn start(name: &str, port: u16, file: &Path) -> Result<EmbeddedRelay, DevnetError> {
        let db = Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
            events: true,
            max_events: None,
        }));
        let resumed = file.exists();
        if resumed {
            let text = std::fs::read_to_string(file)
                .map_err(|e| DevnetError::io(format!("reading {}", file.display()), e))?;
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let event = Event::from_json(line).map_err(|e| {
                    DevnetError::Relay(format!(
                        "{} line {}: not a Nostr event: {e}",
                        file.display(),
                        n + 1
                    ))
                })?;
                db.save_event(&event)
                    .await
                    .map_err(|e| DevnetError::Relay(format!("{name} relay: {e}")))?;
            }
        }
        let builder = RelayBuilder::default()
            .addr([127, 0, 0, 1].into())
            .port(port)
            .database(db.clone())
            .default_filter_limit(DEFAULT_FILTER_LIMIT)
            // Every node of the devnet shares one address: no per-IP rate limit worth having.
            .rate_limit(RateLimit {
                max_reqs: 10_000,
                notes_per_minute: 1_000_000,
            });
        let relay = LocalRelay::new(builder);
        relay.run().await.map_err(|e| {
            DevnetError::Relay(format!(
                "the {name} relay on 127.0.0.1:{port}: {e} (is another devnet running on this DIR?)"
            ))
        })?;
        Ok(EmbeddedRelay {
            name: name.to_string(),
            port,
            relay,
            db,
            file: file.to_path_buf(),
            resumed,
        })
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Stores `event` as if a client had published it, and sends it to live subscribers.
    pub async fn publish(&self, event: Event) -> Result<(), DevnetError> {
        self.db
            .save_event(&event)
            .await
            .map_err(|e| DevnetError::Relay(format!("{} relay: {e}", self.name)))?;
        self.relay.notify_event(event);
        Ok(())
    }

    /// The stored events matching `filter`.
    pub async fn query(&self, filter: Filter) -> Result<Vec<Event>, DevnetError> {
        Ok(self
            .db
            .query(filter)
            .await
            .map_err(|e| DevnetError::Relay(format!("{} relay: {e}", self.name)))?
            .into_iter()
            .collect())
    }

    /// Stops serving and writes every stored event to its file (replaced whole, through a
    /// temporary file, so a crash mid-write leaves the previous one). Returns how many.
    pub async fn stop(self) -> Result<usize, DevnetError> {
        self.relay.shutdown();
        let events = self.query(Filter::new()).await?;
        let tmp = self.file.with_extension("jsonl.tmp");
        let write = || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for event in &events {
                writeln!(out, "{}", event.as_json())?;
            }
            out.into_inner()?.sync_all()?;
            std::fs::rename(&tmp, &self.file)
        };
        write().map_err(|e| DevnetError::io(format!("writing {}", self.file.display()), e))?;
        Ok(events.len())
    }
}
