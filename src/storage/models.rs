//! The rows of `peer_connections` as Rust values, and the checked conversions between a
//! row and a [`PeerRecord`]. Reading never panics: a value the lifecycle could not have
//! written is a [`StorageError::Corrupt`] naming the peer and the column.

use diesel::prelude::*;

use super::schema::{peer_connections, peer_transitions};
use super::StorageError;
use crate::lifecycle::priority::{BEST_PRIORITY, WORST_PRIORITY};
use crate::lifecycle::record::{EventCursor, PeerRecord, PeerTransition};
use crate::lifecycle::state::{PeerIntent, PeerState};
use crate::lifecycle::time::Timestamp;

/// A row as loaded: every column but the surrogate `id`, which never leaves the table.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = peer_connections)]
pub struct PeerConnectionRow {
    pub nostr_pubkey: String,
    pub ilp_address: Option<String>,
    pub endpoint: Option<String>,
    pub base_address: Option<String>,
    pub state: String,
    pub desired: String,
    pub followed: bool,
    pub subscribers: Option<i64>,
    pub priority: i32,
    pub channel_id: Option<String>,
    pub channel_tx_hash: Option<String>,
    pub channel_opening_since: Option<i64>,
    pub last_heartbeat: Option<i64>,
    pub rtt_us: Option<i64>,
    pub reconnect_attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub failure_reason: Option<String>,
    pub subscription_ids: String,
    pub last_event_at: Option<i64>,
    pub last_event_ids: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A row as written: every column but `id`, borrowed from the record where it can be.
/// `None` is written as NULL (not "keep the old value"): records are whole snapshots.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = peer_connections)]
#[diesel(treat_none_as_default_value = false)]
pub struct PeerConnectionWrite<'a> {
    pub nostr_pubkey: &'a str,
    pub ilp_address: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub base_address: Option<&'a str>,
    pub state: &'static str,
    pub desired: &'static str,
    pub followed: bool,
    pub subscribers: Option<i64>,
    pub priority: i32,
    pub channel_id: Option<&'a str>,
    pub channel_tx_hash: Option<&'a str>,
    pub channel_opening_since: Option<i64>,
    pub last_heartbeat: Option<i64>,
    pub rtt_us: Option<i64>,
    pub reconnect_attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub failure_reason: Option<&'a str>,
    pub subscription_ids: String,
    pub last_event_at: Option<i64>,
    pub last_event_ids: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl<'a> PeerConnectionWrite<'a> {
    /// The row for `record`. Fails only for a timestamp past `i64::MAX` milliseconds
    /// (about 292 million years from 1970), which only a bug can produce.
    pub fn from_record(record: &'a PeerRecord) -> Result<Self, StorageError> {
        let pubkey = record.nostr_pubkey.as_str();
        let millis = |field: &'static str, ts: Timestamp| -> Result<i64, StorageError> {
            i64::try_from(ts.as_millis()).map_err(|_| StorageError::OutOfRange {
                pubkey: pubkey.to_owned(),
                field,
                value: ts.as_millis().to_string(),
            })
        };
        let opt_millis =
            |field: &'static str, ts: Option<Timestamp>| ts.map(|ts| millis(field, ts)).transpose();
        let subscription_ids = serde_json::to_string(&record.subscription_ids).map_err(|e| {
            StorageError::OutOfRange {
                pubkey: pubkey.to_owned(),
                field: "subscription_ids",
                value: e.to_string(),
            }
        })?;
        let (last_event_at, last_event_ids) = match &record.event_cursor {
            None => (None, "[]".to_owned()),
            Some(cursor) => (
                Some(
                    i64::try_from(cursor.created_at).map_err(|_| StorageError::OutOfRange {
                        pubkey: pubkey.to_owned(),
                        field: "last_event_at",
                        value: cursor.created_at.to_string(),
                    })?,
                ),
                serde_json::to_string(&cursor.ids).map_err(|e| StorageError::OutOfRange {
                    pubkey: pubkey.to_owned(),
                    field: "last_event_ids",
                    value: e.to_string(),
                })?,
            ),
        };
        Ok(PeerConnectionWrite {
            nostr_pubkey: pubkey,
            ilp_address: record.ilp_address.as_deref(),
            endpoint: record.endpoint.as_deref(),
            base_address: record.base_address.as_deref(),
            state: record.state.as_str(),
            desired: record.desired.as_str(),
            followed: record.followed,
            subscribers: record.subscribers.map(i64::from),
            priority: i32::from(record.priority),
            channel_id: record.channel_id.as_deref(),
            channel_tx_hash: record.channel_tx_hash.as_deref(),
            channel_opening_since: opt_millis(
                "channel_opening_since",
                record.channel_opening_since,
            )?,
            last_heartbeat: opt_millis("last_heartbeat", record.last_heartbeat)?,
            rtt_us: record.rtt_us.map(i64::from),
            reconnect_attempts: i64::from(record.reconnect_attempts),
            next_attempt_at: opt_millis("next_attempt_at", record.next_attempt_at)?,
            failure_reason: record.failure_reason.as_deref(),
            subscription_ids,
            last_event_at,
            last_event_ids,
            created_at: millis("created_at", record.created_at)?,
            updated_at: millis("updated_at", record.updated_at)?,
        })
    }
}

/// `record` with every value no row can hold taken out, so it can be stored: an optional
/// timestamp past `i64` milliseconds is unset, `created_at` / `updated_at` are clamped to
/// the largest storable instant, and an event cursor past `i64` seconds is dropped.
pub fn storable(record: &PeerRecord) -> PeerRecord {
    let max = Timestamp::from_millis(i64::MAX as u64);
    let fits = |ts: &Timestamp| i64::try_from(ts.as_millis()).is_ok();
    let mut out = record.clone();
    for ts in [
        &mut out.channel_opening_since,
        &mut out.last_heartbeat,
        &mut out.next_attempt_at,
    ] {
        if ts.as_ref().is_some_and(|t| !fits(t)) {
            *ts = None;
        }
    }
    out.created_at = out.created_at.min(max);
    out.updated_at = out.updated_at.min(max);
    if out
        .event_cursor
        .as_ref()
        .is_some_and(|c| i64::try_from(c.created_at).is_err())
    {
        out.event_cursor = None;
    }
    out
}

impl PeerConnectionRow {
    /// Maps the row back to a record, checking every column the types do not.
    pub fn into_record(self) -> Result<PeerRecord, StorageError> {
        let pubkey = self.nostr_pubkey;
        let corrupt = |field: &'static str, value: String| StorageError::Corrupt {
            pubkey: pubkey.clone(),
            field,
            value,
        };
        let u32_col = |field: &'static str, value: i64| {
            u32::try_from(value).map_err(|_| corrupt(field, value.to_string()))
        };
        let timestamp = |field: &'static str, value: i64| {
            u64::try_from(value)
                .map(Timestamp::from_millis)
                .map_err(|_| corrupt(field, value.to_string()))
        };

        let state = PeerState::parse(&self.state).ok_or_else(|| corrupt("state", self.state))?;
        let desired =
            PeerIntent::parse(&self.desired).ok_or_else(|| corrupt("desired", self.desired))?;
        let priority = u8::try_from(self.priority)
            .ok()
            .filter(|p| (BEST_PRIORITY..=WORST_PRIORITY).contains(p))
            .ok_or_else(|| corrupt("priority", self.priority.to_string()))?;
        let subscription_ids: Vec<String> = serde_json::from_str(&self.subscription_ids)
            .map_err(|_| corrupt("subscription_ids", self.subscription_ids.clone()))?;
        let event_cursor = match self.last_event_at {
            None => None,
            Some(at) => Some(EventCursor {
                created_at: u64::try_from(at)
                    .map_err(|_| corrupt("last_event_at", at.to_string()))?,
                ids: serde_json::from_str(&self.last_event_ids)
                    .map_err(|_| corrupt("last_event_ids", self.last_event_ids.clone()))?,
            }),
        };

        // `nostr_pubkey` is the last field: the closures above borrow it until then.
        Ok(PeerRecord {
            ilp_address: self.ilp_address,
            endpoint: self.endpoint,
            base_address: self.base_address,
            state,
            desired,
            followed: self.followed,
            subscribers: self
                .subscribers
                .map(|v| u32_col("subscribers", v))
                .transpose()?,
            priority,
            channel_id: self.channel_id,
            channel_tx_hash: self.channel_tx_hash,
            channel_opening_since: self
                .channel_opening_since
                .map(|v| timestamp("channel_opening_since", v))
                .transpose()?,
            last_heartbeat: self
                .last_heartbeat
                .map(|v| timestamp("last_heartbeat", v))
                .transpose()?,
            rtt_us: self.rtt_us.map(|v| u32_col("rtt_us", v)).transpose()?,
            reconnect_attempts: u32_col("reconnect_attempts", self.reconnect_attempts)?,
            next_attempt_at: self
                .next_attempt_at
                .map(|v| timestamp("next_attempt_at", v))
                .transpose()?,
            failure_reason: self.failure_reason,
            subscription_ids,
            event_cursor,
            created_at: timestamp("created_at", self.created_at)?,
            updated_at: timestamp("updated_at", self.updated_at)?,
            nostr_pubkey: pubkey,
        })
    }
}

/// A row of `peer_transitions` as written.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = peer_transitions)]
pub struct TransitionWrite<'a> {
    pub nostr_pubkey: &'a str,
    pub from_state: Option<&'static str>,
    pub to_state: &'static str,
    pub reason: Option<&'a str>,
    pub at: i64,
}

impl<'a> From<&'a PeerTransition> for TransitionWrite<'a> {
    fn from(t: &'a PeerTransition) -> Self {
        TransitionWrite {
            nostr_pubkey: &t.nostr_pubkey,
            from_state: t.from.map(PeerState::as_str),
            to_state: t.to.as_str(),
            reason: t.reason.as_deref(),
            // A history entry is never refused: an instant past `i64` is clamped.
            at: i64::try_from(t.at.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A row of `peer_transitions` as loaded.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = peer_transitions)]
pub struct TransitionRow {
    pub nostr_pubkey: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub reason: Option<String>,
    pub at: i64,
}

impl TransitionRow {
    pub fn into_transition(self) -> Result<PeerTransition, StorageError> {
        let state = |field: &'static str, value: &str| {
            PeerState::parse(value).ok_or_else(|| StorageError::Corrupt {
                pubkey: self.nostr_pubkey.clone(),
                field,
                value: value.to_owned(),
            })
        };
        let from = self
            .from_state
            .as_deref()
            .map(|v| state("peer_transitions.from_state", v))
            .transpose()?;
        let to = state("peer_transitions.to_state", &self.to_state)?;
        let at = u64::try_from(self.at).map_err(|_| StorageError::Corrupt {
            pubkey: self.nostr_pubkey.clone(),
            field: "peer_transitions.at",
            value: self.at.to_string(),
        })?;
        Ok(PeerTransition {
            from,
            to,
            reason: self.reason,
            at: Timestamp::from_millis(at),
            nostr_pubkey: self.nostr_pubkey,
        })
    }
}
