//! What this node asked its peers for: one open subscription per connected peer (the
//! initial REQ: the peer's own events since its cursor), and the checks every EVENT that
//! comes back must pass before it is published: an id and a signature that are the
//! event's own, and a match with the subscription's filter. Plain logic, no IO.

use std::collections::HashMap;
use std::sync::Mutex;

use nostr::filter::MatchEventOptions;
use nostr::{Event, Filter, PublicKey, Timestamp as NostrTime};

use crate::lifecycle::EventCursor;

/// Why an EVENT was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an answer to a subscription of ours (closed meanwhile, or never opened): not
    /// the peer's fault by itself.
    #[error("no open subscription {0:?} toward this peer")]
    UnknownSubscription(String),
    /// The id or signature is not the event's own: the peer forged or corrupted it.
    #[error("forged event {id}: {problem}")]
    Forged { id: String, problem: &'static str },
    /// A valid event the subscription did not ask for.
    #[error("event {id} does not match subscription {subscription}'s filter ({problem})")]
    NotMatching {
        id: String,
        subscription: String,
        problem: String,
    },
}

impl Refusal {
    /// Whether the peer broke the protocol (and is to be disconnected for it).
    pub fn is_misbehaviour(&self) -> bool {
        !matches!(self, Refusal::UnknownSubscription(_))
    }
}

/// What an accepted EVENT is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// New: publish it.
    New,
    /// Already received (the cursor's second is asked again on resume): answer, do not
    /// publish twice.
    AlreadyReceived,
}

/// One open subscription toward a peer.
#[derive(Debug, Clone)]
struct Open {
    id: String,
    filter: Filter,
    /// Progress since the REQ, seeded with the stored cursor.
    cursor: EventCursor,
    /// Whether the peer said EOSE (its stored events are all here).
    stored_done: bool,
}

/// The subscriptions this node holds toward its peers, keyed by the peer's pubkey (hex).
#[derive(Debug, Default)]
pub struct Inbox {
    open: Mutex<HashMap<String, Open>>,
}

impl Inbox {
    /// Opens (or replaces) the subscription toward `peer`: its own events since the
    /// cursor's second (inclusive: an event of that second not yet received is not missed).
    pub fn open(&self, peer: &PublicKey, cursor: Option<&EventCursor>) -> (String, Filter) {
        let id = format!("btpn-{:016x}", fastrand::u64(..));
        let mut filter = Filter::new().author(*peer);
        if let Some(c) = cursor {
            filter = filter.since(NostrTime::from(c.created_at));
        }
        let open = Open {
            id: id.clone(),
            filter: filter.clone(),
            cursor: cursor.cloned().unwrap_or_default(),
            stored_done: false,
        };
        self.lock().insert(peer.to_hex(), open);
        (id, filter)
    }

    /// Forgets the subscription `id` toward `peer` (after its CLOSE, or the session's end).
    pub fn close(&self, peer: &str, id: &str) {
        let mut open = self.lock();
        if open.get(peer).is_some_and(|o| o.id == id) {
            open.remove(peer);
        }
    }

    /// Checks an EVENT `peer` sent for subscription `id`.
    pub fn check(&self, peer: &str, id: &str, event: &Event) -> Result<Accepted, Refusal> {
        let open = self.lock();
        let sub = open
            .get(peer)
            .filter(|o| o.id == id)
            .ok_or_else(|| Refusal::UnknownSubscription(id.to_owned()))?;
        let event_id = event.id.to_hex();
        if !event.verify_id() {
            return Err(Refusal::Forged {
                id: event_id,
                problem: "the id is not the hash of the event",
            });
        }
        if !event.verify_signature() {
            return Err(Refusal::Forged {
                id: event_id,
                problem: "the signature is not the author's",
            });
        }
        if !sub.filter.match_event(event, MatchEventOptions::new()) {
            let problem = match &sub.filter.authors {
                Some(authors) if !authors.contains(&event.pubkey) => {
                    format!("author {} was not asked for", event.pubkey.to_hex())
                }
                _ => format!(
                    "created_at {} is before since {}",
                    event.created_at.as_secs(),
                    sub.filter.since.map_or(0, |s| s.as_secs())
                ),
            };
            return Err(Refusal::NotMatching {
                id: event_id,
                subscription: id.to_owned(),
                problem,
            });
        }
        if sub.cursor.has(event.created_at.as_secs(), &event_id) {
            return Ok(Accepted::AlreadyReceived);
        }
        Ok(Accepted::New)
    }

    /// Moves the subscription's cursor past a published event.
    pub fn received(&self, peer: &str, id: &str, event: &Event) {
        if let Some(sub) = self.lock().get_mut(peer).filter(|o| o.id == id) {
            sub.cursor
                .advance(event.created_at.as_secs(), &event.id.to_hex());
        }
    }

    /// The peer said EOSE for `id`; false if no such subscription is open.
    pub fn stored_done(&self, peer: &str, id: &str) -> bool {
        match self.lock().get_mut(peer).filter(|o| o.id == id) {
            Some(sub) => {
                sub.stored_done = true;
                true
            }
            None => false,
        }
    }

    /// How many subscriptions are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys};

    fn note(keys: &Keys, text: &str, at: u64) -> Event {
        EventBuilder::text_note(text)
            .custom_created_at(NostrTime::from(at))
            .sign_with_keys(keys)
            .unwrap()
    }

    /// The same event with `content` changed, its id and signature left as they were.
    fn tampered(event: &Event, content: &str) -> Event {
        let mut json = serde_json::to_value(event).unwrap();
        json["content"] = content.into();
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_the_peers_own_signed_events_since_the_cursor_pass() {
        let peer = Keys::generate();
        let inbox = Inbox::default();
        let cursor = EventCursor {
            created_at: 1_000,
            ids: vec![],
        };
        let (id, filter) = inbox.open(&peer.public_key(), Some(&cursor));
        assert_eq!(filter.since, Some(NostrTime::from(1_000)));
        let pk = peer.public_key().to_hex();

        let good = note(&peer, "hello", 1_000);
        assert_eq!(inbox.check(&pk, &id, &good), Ok(Accepted::New));

        let e = inbox
            .check(&pk, &id, &tampered(&good, "goodbye"))
            .unwrap_err();
        assert!(matches!(e, Refusal::Forged { .. }), "{e}");
        assert!(e.is_misbehaviour());

        // A valid id over someone else's signature.
        let mut json = serde_json::to_value(&good).unwrap();
        json["sig"] = serde_json::to_value(note(&peer, "other", 1_000).sig).unwrap();
        let e = inbox
            .check(&pk, &id, &serde_json::from_value(json).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");

        let stranger = note(&Keys::generate(), "not asked", 2_000);
        let e = inbox.check(&pk, &id, &stranger).unwrap_err();
        assert!(e.to_string().contains("was not asked for"), "{e}");
        let old = note(&peer, "before the cursor", 999);
        let e = inbox.check(&pk, &id, &old).unwrap_err();
        assert!(e.to_string().contains("before since 1000"), "{e}");

        let e = inbox.check(&pk, "other-sub", &good).unwrap_err();
        assert!(!e.is_misbehaviour(), "{e}");
    }

    #[test]
    fn events_already_received_at_the_cursor_second_are_not_new() {
        let peer = Keys::generate();
        let pk = peer.public_key().to_hex();
        let first = note(&peer, "a", 50);
        let second = note(&peer, "b", 50);
        let cursor = EventCursor {
            created_at: 50,
            ids: vec![first.id.to_hex()],
        };
        let inbox = Inbox::default();
        let (id, _) = inbox.open(&peer.public_key(), Some(&cursor));
        assert_eq!(inbox.check(&pk, &id, &first), Ok(Accepted::AlreadyReceived));
        assert_eq!(inbox.check(&pk, &id, &second), Ok(Accepted::New));
        inbox.received(&pk, &id, &second);
        assert_eq!(
            inbox.check(&pk, &id, &second),
            Ok(Accepted::AlreadyReceived)
        );
        inbox.close(&pk, &id);
        assert!(inbox.is_empty());
    }
}
