//! [`VerifiedEvent`]: an event whose id and signature were checked, and the only kind of
//! event the operator's relay is given ([`super::relay::OperatorRelay::publish`],
//! [`super::OperatorStore::publish`]).
//!
//! Checking is the expensive part of an event's way through the node (a Schnorr
//! verification), and an invalid event must never reach the operator's relay (the PyPI
//! `nostr-relay` slows the whole connection down after refusing one; see
//! [`super::relay`]). Making the check a type does both at once: only
//! [`VerifiedEvent::verify`] makes one (the field is private, and there is no
//! `Deserialize` or `From<Event>`), so no caller can publish an unchecked event, and none
//! needs to check one twice.
//!
//! ```compile_fail
//! # async fn f(relay: btp_nips_node::events::relay::OperatorRelay, event: nostr::Event) {
//! // A plain event cannot be published: only a verified one.
//! relay.publish(&event).await;
//! # }
//! ```

use std::ops::Deref;

use nostr::Event;

/// An event whose id is the hash of its contents and whose signature is its author's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvent(Event);

/// Why an event is not a [`VerifiedEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {id}: {problem}")]
pub struct Unverified {
    /// The id the event claims (hex).
    pub id: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl VerifiedEvent {
    /// Checks `event`'s id, then its signature.
    pub fn verify(event: Event) -> Result<VerifiedEvent, Unverified> {
        let problem = if !event.verify_id() {
            "the id is not the hash of the event"
        } else if !event.verify_signature() {
            "the signature is not the author's"
        } else {
            return Ok(VerifiedEvent(event));
        };
        Err(Unverified {
            id: event.id.to_hex(),
            problem,
        })
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.0
    }

    /// The event, no longer marked as checked.
    pub fn into_event(self) -> Event {
        self.0
    }
}

impl Deref for VerifiedEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.0
    }
}

impl AsRef<Event> for VerifiedEvent {
    fn as_ref(&self) -> &Event {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys};

    fn tampered(event: &Event, field: &str, value: serde_json::Value) -> Event {
        let mut json = serde_json::to_value(event).unwrap();
        json[field] = value;
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_an_event_with_its_own_id_and_signature_is_verified() {
        let keys = Keys::generate();
        let good = EventBuilder::text_note("hello")
            .sign_with_keys(&keys)
            .unwrap();
        let verified = VerifiedEvent::verify(good.clone()).unwrap();
        assert_eq!(verified.event(), &good);
        assert_eq!(verified.into_event(), good);

        let forged = tampered(&good, "content", "goodbye".into());
        let e = VerifiedEvent::verify(forged).unwrap_err();
        assert_eq!(e.id, good.id.to_hex());
        assert!(e.problem.contains("id"), "{e}");

        let other = EventBuilder::text_note("other")
            .sign_with_keys(&keys)
            .unwrap();
        let wrong_sig = tampered(&good, "sig", serde_json::to_value(other.sig).unwrap());
        let e = VerifiedEvent::verify(wrong_sig).unwrap_err();
        assert!(e.problem.contains("signature"), "{e}");
    }
}
