//! What this node asked its peers for: one open subscription per connected peer (the
//! initial REQ: the peer's own events since its cursor), and the checks every EVENT that
//! comes back must pass before it is published: an id and a signature that are the
//! event's own, a match with the subscription's filter, and a `created_at` not too far
//! ahead of the node's clock (the clock is an argument: plain logic, no IO).
//!
//! Each subscription keeps a cursor: the newest second received and the ids received at
//! it, at most `max_cursor_ids` of them (a fixed bound, so a peer sending many events of
//! one second costs neither memory nor time per event; one of that second not remembered
//! is simply published again after a resume, and the relay drops the repeat).
//!
//! Several EVENTs of one subscription may be in flight at once (the sender's window), and
//! their publications may finish in any order: each accepted event takes a ticket in the
//! order it arrived, and the cursor moves past an event only once it and every event that
//! arrived before it are published. A slow OK never lets the cursor skip an event that is
//! not in the relay yet; one that never gets there holds the cursor until the
//! subscription is opened again (which asks for it again).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use nostr::filter::MatchEventOptions;
use nostr::{Event, Filter, PublicKey, Timestamp as NostrTime};

use super::verified::VerifiedEvent;
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
    /// A valid event created too far ahead of this node's clock: refused, not the peer's
    /// misbehaviour (its clock may be wrong); it never moves the cursor.
    #[error(
        "event {id}: created_at {created_at} is more than {max_future_seconds} s ahead of \
         this node's clock ({now}) (events.max_future_seconds)"
    )]
    FutureDated {
        id: String,
        created_at: u64,
        now: u64,
        max_future_seconds: u64,
    },
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
        !matches!(
            self,
            Refusal::UnknownSubscription(_) | Refusal::FutureDated { .. }
        )
    }
}

/// What an accepted EVENT is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// New: publish it (the event, checked here once for all), then hand the ticket to
    /// [`Inbox::received`].
    New(Ticket, Box<VerifiedEvent>),
    /// Already received (the cursor's second is asked again on resume): answer, do not
    /// publish twice.
    AlreadyReceived,
}

/// An accepted event's place in the order its subscription's events arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// An accepted event not yet behind the cursor.
#[derive(Debug, Clone)]
struct Pending {
    ticket: Ticket,
    created_at: u64,
    id: String,
    published: bool,
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
    /// Accepted events in the order they arrived, until they and all before them are
    /// published (as many as the sender has in flight, plus those published behind a
    /// slower one).
    pending: VecDeque<Pending>,
    next_ticket: u64,
}

/// The limits the inbox applies (`events.max_future_seconds`, `events.max_cursor_ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    pub max_future_seconds: u64,
    pub max_cursor_ids: usize,
}

impl Default for InboxLimits {
    /// The shipped defaults.
    fn default() -> Self {
        InboxLimits {
            max_future_seconds: 900,
            max_cursor_ids: 128,
        }
    }
}

/// The subscriptions this node holds toward its peers, keyed by the peer's pubkey (hex).
#[derive(Debug, Default)]
pub struct Inbox {
    open: Mutex<HashMap<String, Open>>,
    limits: InboxLimits,
}

/// Moves `cursor` past an event received (`created_at`, `id`), remembering at most `max`
/// ids of the cursor's second. Returns whether the cursor changed: false for an event
/// older than its second, one already remembered, or one past the bound.
pub fn advance_bounded(cursor: &mut EventCursor, created_at: u64, id: &str, max: usize) -> bool {
    if created_at > cursor.created_at {
        cursor.created_at = created_at;
        cursor.ids.clear();
        cursor.ids.push(id.to_owned());
        true
    } else if created_at == cursor.created_at
        && cursor.ids.len() < max
        && !cursor.ids.iter().any(|known| known == id)
    {
        cursor.ids.push(id.to_owned());
        true
    } else {
        false
    }
}

impl Inbox {
    /// An inbox applying `limits`.
    pub fn new(limits: InboxLimits) -> Inbox {
        Inbox {
            open: Mutex::default(),
            limits,
        }
    }

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
            pending: VecDeque::new(),
            next_ticket: 0,
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

    /// Checks an EVENT `peer` sent for subscription `id`, at `now` (Unix seconds). A new
    /// one comes back as a [`VerifiedEvent`]: its id and signature are checked here, once.
    pub fn check(&self, peer: &str, id: &str, event: Event, now: u64) -> Result<Accepted, Refusal> {
        let mut open = self.lock();
        let sub = open
            .get_mut(peer)
            .filter(|o| o.id == id)
            .ok_or_else(|| Refusal::UnknownSubscription(id.to_owned()))?;
        let event = VerifiedEvent::verify(event).map_err(|e| Refusal::Forged {
            id: e.id,
            problem: e.problem,
        })?;
        let event_id = event.id.to_hex();
        if !sub.filter.match_event(&event, MatchEventOptions::new()) {
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
        let created_at = event.created_at.as_secs();
        if created_at > now.saturating_add(self.limits.max_future_seconds) {
            return Err(Refusal::FutureDated {
                id: event_id,
                created_at,
                now,
                max_future_seconds: self.limits.max_future_seconds,
            });
        }
        if sub.cursor.has(created_at, &event_id) {
            return Ok(Accepted::AlreadyReceived);
        }
        let ticket = Ticket(sub.next_ticket);
        sub.next_ticket += 1;
        sub.pending.push_back(Pending {
            ticket,
            created_at,
            id: event_id,
            published: false,
        });
        Ok(Accepted::New(ticket, Box::new(event)))
    }

    /// The event of `ticket` is published (or will never be: the relay refused it for
    /// good). Moves the cursor past every event published in arrival order up to the first
    /// one still waiting; returns those that moved it (`created_at`, id), in order (see
    /// [`advance_bounded`]).
    pub fn received(&self, peer: &str, id: &str, ticket: Ticket) -> Vec<(u64, String)> {
        let max = self.limits.max_cursor_ids;
        let mut open = self.lock();
        let Some(sub) = open.get_mut(peer).filter(|o| o.id == id) else {
            return Vec::new();
        };
        if let Some(p) = sub.pending.iter_mut().find(|p| p.ticket == ticket) {
            p.published = true;
        }
        let mut moved = Vec::new();
        while sub.pending.front().is_some_and(|p| p.published) {
            let p = sub.pending.pop_front().expect("front");
            if advance_bounded(&mut sub.cursor, p.created_at, &p.id, max) {
                moved.push((p.created_at, p.id));
            }
        }
        moved
    }

    /// The cursor of the subscription `id` toward `peer`, if open.
    pub fn cursor(&self, peer: &str, id: &str) -> Option<EventCursor> {
        self.lock()
            .get(peer)
            .filter(|o| o.id == id)
            .map(|o| o.cursor.clone())
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

    /// The clock of these tests: after every `created_at` they use.
    const NOW: u64 = 1_000_000;

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
        assert!(matches!(
            inbox.check(&pk, &id, good.clone(), NOW),
            Ok(Accepted::New(..))
        ));

        let e = inbox
            .check(&pk, &id, tampered(&good, "goodbye"), NOW)
            .unwrap_err();
        assert!(matches!(e, Refusal::Forged { .. }), "{e}");
        assert!(e.is_misbehaviour());

        // A valid id over someone else's signature.
        let mut json = serde_json::to_value(&good).unwrap();
        json["sig"] = serde_json::to_value(note(&peer, "other", 1_000).sig).unwrap();
        let e = inbox
            .check(&pk, &id, serde_json::from_value(json).unwrap(), NOW)
            .unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");

        let stranger = note(&Keys::generate(), "not asked", 2_000);
        let e = inbox.check(&pk, &id, stranger.clone(), NOW).unwrap_err();
        assert!(e.to_string().contains("was not asked for"), "{e}");
        let old = note(&peer, "before the cursor", 999);
        let e = inbox.check(&pk, &id, old.clone(), NOW).unwrap_err();
        assert!(e.to_string().contains("before since 1000"), "{e}");

        let e = inbox
            .check(&pk, "other-sub", good.clone(), NOW)
            .unwrap_err();
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
        assert_eq!(
            inbox.check(&pk, &id, first.clone(), NOW),
            Ok(Accepted::AlreadyReceived)
        );
        let Ok(Accepted::New(ticket, _)) = inbox.check(&pk, &id, second.clone(), NOW) else {
            panic!("new")
        };
        inbox.received(&pk, &id, ticket);
        assert_eq!(
            inbox.check(&pk, &id, second.clone(), NOW),
            Ok(Accepted::AlreadyReceived)
        );
        inbox.close(&pk, &id);
        assert!(inbox.is_empty());
    }

    #[test]
    fn events_too_far_ahead_of_the_clock_are_refused_and_leave_the_cursor() {
        let peer = Keys::generate();
        let pk = peer.public_key().to_hex();
        let inbox = Inbox::new(InboxLimits {
            max_future_seconds: 900,
            max_cursor_ids: 4,
        });
        let (id, _) = inbox.open(&peer.public_key(), None);
        let edge = note(&peer, "at the limit", NOW + 900);
        assert!(matches!(
            inbox.check(&pk, &id, edge.clone(), NOW),
            Ok(Accepted::New(..))
        ));
        for at in [NOW + 901, NOW + 86_400, 1 << 63, u64::MAX] {
            let e = inbox
                .check(&pk, &id, note(&peer, "ahead", at), NOW)
                .unwrap_err();
            assert!(matches!(e, Refusal::FutureDated { .. }), "{e}");
            assert!(!e.is_misbehaviour());
            assert!(e.to_string().contains("events.max_future_seconds"), "{e}");
        }
        assert_eq!(inbox.cursor(&pk, &id), Some(EventCursor::default()));
    }

    #[test]
    fn the_cursor_remembers_at_most_its_bound_of_ids_at_one_second() {
        let peer = Keys::generate();
        let pk = peer.public_key().to_hex();
        let inbox = Inbox::new(InboxLimits {
            max_future_seconds: 900,
            max_cursor_ids: 3,
        });
        let (id, _) = inbox.open(&peer.public_key(), None);
        let events: Vec<Event> = (0..6).map(|i| note(&peer, &format!("{i}"), 70)).collect();
        let changed: Vec<bool> = events
            .iter()
            .map(|e| publish(&inbox, &pk, &id, e))
            .collect();
        assert_eq!(changed, [true, true, true, false, false, false]);
        let cursor = inbox.cursor(&pk, &id).unwrap();
        assert_eq!((cursor.created_at, cursor.ids.len()), (70, 3));
        // One remembered is already received; one past the bound is new (published again).
        assert_eq!(
            inbox.check(&pk, &id, events[0].clone(), NOW),
            Ok(Accepted::AlreadyReceived)
        );
        let Ok(Accepted::New(again, _)) = inbox.check(&pk, &id, events[5].clone(), NOW) else {
            panic!("new")
        };
        assert!(inbox.received(&pk, &id, again).is_empty());
        // A later second starts afresh; an older one changes nothing.
        assert!(publish(&inbox, &pk, &id, &note(&peer, "later", 71)));
        assert!(!publish(&inbox, &pk, &id, &note(&peer, "older", 69)));
        assert_eq!(inbox.cursor(&pk, &id).unwrap().ids.len(), 1);
    }

    /// Checks `event` and, when new, marks it published; whether the cursor moved.
    fn publish(inbox: &Inbox, pk: &str, id: &str, event: &Event) -> bool {
        match inbox.check(pk, id, event.clone(), 1 << 40) {
            Ok(Accepted::New(ticket, _)) => !inbox.received(pk, id, ticket).is_empty(),
            _ => false,
        }
    }

    #[test]
    fn publications_finishing_out_of_order_move_the_cursor_in_arrival_order() {
        let peer = Keys::generate();
        let pk = peer.public_key().to_hex();
        let inbox = Inbox::default();
        let (id, _) = inbox.open(&peer.public_key(), None);
        let events: Vec<Event> = (0..4)
            .map(|i| note(&peer, &format!("{i}"), 100 + i))
            .collect();
        let tickets: Vec<Ticket> = events
            .iter()
            .map(|e| match inbox.check(&pk, &id, e.clone(), NOW) {
                Ok(Accepted::New(t, _)) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        let at = |inbox: &Inbox| inbox.cursor(&pk, &id).unwrap().created_at;
        // The relay answers the last two first: the first two are not in it yet, so the
        // cursor stays where it was.
        assert!(inbox.received(&pk, &id, tickets[3]).is_empty());
        assert!(inbox.received(&pk, &id, tickets[2]).is_empty());
        assert_eq!(at(&inbox), 0);
        // The second: still waiting for the first.
        assert!(inbox.received(&pk, &id, tickets[1]).is_empty());
        assert_eq!(at(&inbox), 0);
        // The first: the cursor moves past all four, in order.
        let moved = inbox.received(&pk, &id, tickets[0]);
        let seconds: Vec<u64> = moved.iter().map(|(s, _)| *s).collect();
        assert_eq!(seconds, [100, 101, 102, 103]);
        assert_eq!(at(&inbox), 103);
        // A ticket of a subscription opened again since is ignored.
        let (again, _) = inbox.open(&peer.public_key(), None);
        assert!(inbox.received(&pk, &again, tickets[0]).is_empty());
    }
}
