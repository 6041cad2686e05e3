//! What one relay may send for one REQ, and the screening of what it sends.
//!
//! A relay answers a discovery or follow-list REQ with whatever it likes: events of other
//! authors, kinds or `d` tags, copies of one event, or an endless stream that never reaches
//! EOSE. Every event a relay sends for a REQ counts against that REQ's [`ReqBounds`]
//! (`nostr.max_events_per_req` events and `nostr.max_bytes_per_req` bytes of event JSON);
//! once either is spent the REQ is closed and the lookup ends with what it has. Events that
//! do not answer the REQ are ignored ([`mismatch`]), never kept, and counted by reason in
//! [`RelayStats`], which also counts the REQs cut by a bound.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use nostr_sdk::prelude::{Event, Filter, JsonUtil, MatchEventOptions};

/// `nostr.max_events_per_req` when not configured (as in `config/default.yaml`).
pub const DEFAULT_MAX_EVENTS_PER_REQ: usize = 2_000;
/// `nostr.max_bytes_per_req` when not configured (as in `config/default.yaml`).
pub const DEFAULT_MAX_BYTES_PER_REQ: usize = 4 * 1024 * 1024;

/// How much one relay may send for one REQ before the REQ is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReqBounds {
    /// Events (matching or not) read for one REQ.
    pub max_events: usize,
    /// Bytes of those events' JSON.
    pub max_bytes: usize,
}

impl Default for ReqBounds {
    fn default() -> Self {
        ReqBounds {
            max_events: DEFAULT_MAX_EVENTS_PER_REQ,
            max_bytes: DEFAULT_MAX_BYTES_PER_REQ,
        }
    }
}

/// Why an event a relay sent for a REQ was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// Signed by an author the REQ did not ask for.
    Author,
    /// Of a kind the REQ did not ask for.
    Kind,
    /// Without the `d` tag (or another tag) the REQ asked for.
    Tag,
    /// Outside the REQ's other conditions (ids, since, until, search).
    OtherFilter,
    /// The same event again within one answer.
    Duplicate,
    /// Its id or signature does not check out.
    Signature,
    /// Not newer than what the same relay already sent on a live subscription.
    Stale,
}

impl Ignored {
    pub const ALL: [Ignored; 7] = [
        Ignored::Author,
        Ignored::Kind,
        Ignored::Tag,
        Ignored::OtherFilter,
        Ignored::Duplicate,
        Ignored::Signature,
        Ignored::Stale,
    ];

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Ignored::Author => "other author",
            Ignored::Kind => "other kind",
            Ignored::Tag => "other d tag",
            Ignored::OtherFilter => "outside the filter",
            Ignored::Duplicate => "duplicate",
            Ignored::Signature => "bad id or signature",
            Ignored::Stale => "not newer",
        }
    }
}

/// Events ignored, per reason.
#[derive(Debug, Default)]
pub struct IgnoredCounts {
    pub author: AtomicU64,
    pub kind: AtomicU64,
    pub tag: AtomicU64,
    pub other_filter: AtomicU64,
    pub duplicate: AtomicU64,
    pub signature: AtomicU64,
    pub stale: AtomicU64,
}

impl IgnoredCounts {
    pub fn counter(&self, why: Ignored) -> &AtomicU64 {
        match why {
            Ignored::Author => &self.author,
            Ignored::Kind => &self.kind,
            Ignored::Tag => &self.tag,
            Ignored::OtherFilter => &self.other_filter,
            Ignored::Duplicate => &self.duplicate,
            Ignored::Signature => &self.signature,
            Ignored::Stale => &self.stale,
        }
    }

    /// Every ignored event, whatever the reason.
    pub fn total(&self) -> u64 {
        Ignored::ALL
            .iter()
            .map(|w| self.counter(*w).load(Ordering::Relaxed))
            .sum()
    }
}

/// What the relays sent that was not kept, for the admin metrics and the tests. One per
/// [`super::relays::RelaySet`], shared by its clones (the resolver's queries and the follow
/// monitor's subscription).
#[derive(Debug, Default)]
pub struct RelayStats {
    pub ignored: IgnoredCounts,
    /// REQs closed because a relay sent more than `nostr.max_events_per_req` events.
    pub cut_by_events: AtomicU64,
    /// REQs closed because a relay sent more than `nostr.max_bytes_per_req` bytes.
    pub cut_by_bytes: AtomicU64,
}

impl RelayStats {
    pub fn count_ignored(&self, why: Ignored) {
        self.ignored.counter(why).fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_cut(&self, cut: &Cut) {
        match cut {
            Cut::Events(_) => &self.cut_by_events,
            Cut::Bytes(_) => &self.cut_by_bytes,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// REQs cut by either bound.
    pub fn cuts(&self) -> u64 {
        self.cut_by_events.load(Ordering::Relaxed) + self.cut_by_bytes.load(Ordering::Relaxed)
    }
}

/// Which bound a REQ ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// More than this many events.
    Events(usize),
    /// More than this many bytes.
    Bytes(usize),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Events(n) => write!(f, "more than {n} events (nostr.max_events_per_req)"),
            Cut::Bytes(n) => write!(f, "more than {n} bytes of events (nostr.max_bytes_per_req)"),
        }
    }
}

/// What one REQ has used of its bounds.
#[derive(Debug, Clone)]
pub struct ReqBudget {
    bounds: ReqBounds,
    events: usize,
    bytes: usize,
}

impl ReqBudget {
    pub fn new(bounds: ReqBounds) -> Self {
        ReqBudget {
            bounds,
            events: 0,
            bytes: 0,
        }
    }

    /// Counts `event`; `Err` once the REQ has been sent more than its bounds allow (the
    /// event that crosses a bound is not to be used).
    pub fn take(&mut self, event: &Event) -> Result<(), Cut> {
        self.events += 1;
        if self.events > self.bounds.max_events {
            return Err(Cut::Events(self.bounds.max_events));
        }
        self.bytes = self.bytes.saturating_add(event.as_json().len());
        if self.bytes > self.bounds.max_bytes {
            return Err(Cut::Bytes(self.bounds.max_bytes));
        }
        Ok(())
    }

    /// Events counted so far.
    pub fn events(&self) -> usize {
        self.events
    }
}

/// Why `event` does not answer `filter`, if it does not (the signature is not checked
/// here; see [`Ignored::Signature`]).
pub fn mismatch(filter: &Filter, event: &Event) -> Option<Ignored> {
    let only = MatchEventOptions::unmatch();
    if !filter.match_event(event, only.kind(true)) {
        Some(Ignored::Kind)
    } else if !filter.match_event(event, only.author(true)) {
        Some(Ignored::Author)
    } else if !filter.match_event(event, only.tags(true)) {
        Some(Ignored::Tag)
    } else if !filter.match_event(event, MatchEventOptions::new()) {
        Some(Ignored::OtherFilter)
    } else {
        None
    }
}

/// The ignored events of one answer, by reason, for one log line.
#[derive(Debug, Clone, Default)]
pub struct IgnoredTally(Vec<(Ignored, usize)>);

impl IgnoredTally {
    pub fn add(&mut self, why: Ignored) {
        match self.0.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => self.0.push((why, 1)),
        }
    }

    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for IgnoredTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (why, n)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n} {}", why.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::prelude::{EventBuilder, Keys, Kind, Tag};

    #[test]
    fn mismatches_are_named_by_the_first_condition_they_break() {
        let keys = Keys::generate();
        let filter = Filter::new()
            .kind(Kind::Custom(32001))
            .author(keys.public_key())
            .identifier("ilp-node-info");
        let build = |kind: u16, keys: &Keys, d: &str| {
            EventBuilder::new(Kind::Custom(kind), "")
                .tags([Tag::identifier(d)])
                .sign_with_keys(keys)
                .unwrap()
        };
        assert_eq!(
            mismatch(&filter, &build(32001, &keys, "ilp-node-info")),
            None
        );
        assert_eq!(
            mismatch(&filter, &build(1, &keys, "ilp-node-info")),
            Some(Ignored::Kind)
        );
        assert_eq!(
            mismatch(&filter, &build(32001, &Keys::generate(), "ilp-node-info")),
            Some(Ignored::Author)
        );
        assert_eq!(
            mismatch(&filter, &build(32001, &keys, "other")),
            Some(Ignored::Tag)
        );
    }

    #[test]
    fn a_budget_ends_at_either_bound() {
        let keys = Keys::generate();
        let event = EventBuilder::text_note("x").sign_with_keys(&keys).unwrap();
        let size = event.as_json().len();
        let mut by_count = ReqBudget::new(ReqBounds {
            max_events: 2,
            max_bytes: usize::MAX,
        });
        assert!(by_count.take(&event).is_ok() && by_count.take(&event).is_ok());
        assert_eq!(by_count.take(&event), Err(Cut::Events(2)));
        let mut by_size = ReqBudget::new(ReqBounds {
            max_events: 100,
            max_bytes: size * 2 + 1,
        });
        assert!(by_size.take(&event).is_ok() && by_size.take(&event).is_ok());
        assert_eq!(by_size.take(&event), Err(Cut::Bytes(size * 2 + 1)));
    }
}
