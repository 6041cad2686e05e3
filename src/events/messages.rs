//! The NIP-01 messages that travel in the `nostr` field of a BTP-NIPs packet, read and
//! written. Reading names what is wrong; it checks shapes only (an event's id and signature
//! are checked by [`super::inbox`]).
//!
//! | type  | `nostr`                              | answered with (Fulfill data)             |
//! |-------|--------------------------------------|------------------------------------------|
//! | REQ   | `["REQ", id, filter, …]`             | nothing, or a NOTICE if refused          |
//! | CLOSE | `["CLOSE", id]`                      | nothing                                  |
//! | EVENT | `["EVENT", id, event]` (to the asker)| `["OK", event id, accepted, message]`    |
//! | EOSE  | `["EOSE", id]`                       | nothing                                  |
//! | NOTICE| `["NOTICE", message]`                | nothing                                  |
//!
//! An EVENT the receiver refuses (forged, not matching its filter) is answered with an ILP
//! Reject naming why; one its relay could not take now, with a temporary (T) Reject.

use nostr::{Event, EventId, Filter};
use serde_json::{json, Value};

use crate::wire::btp_nips::{MessageType, Packet};

/// NIP-01 caps subscription ids at 64 characters.
pub const MAX_SUBSCRIPTION_ID_LEN: usize = 64;

/// A Nostr message read off a packet.
#[derive(Debug, Clone)]
pub enum NostrMessage {
    Req { id: String, filters: Vec<Filter> },
    Close { id: String },
    Event { id: String, event: Box<Event> },
    Eose { id: String },
    Notice { message: String },
}

/// What is wrong with a packet's `nostr` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message_type}: {problem}")]
pub struct MessageError {
    pub message_type: MessageType,
    pub problem: String,
}

impl NostrMessage {
    /// Reads the message a packet of type REQ, CLOSE, EVENT, EOSE or NOTICE carries; the
    /// label in the array must agree with the packet type.
    pub fn read(packet: &Packet) -> Result<NostrMessage, MessageError> {
        let t = packet.message_type;
        let err = |problem: String| MessageError {
            message_type: t,
            problem,
        };
        let items = packet
            .payload
            .nostr
            .as_array()
            .ok_or_else(|| err("nostr: not a NIP-01 message array".into()))?;
        match items.first().and_then(Value::as_str) {
            Some(label) if label == t.name() => {}
            Some(label) => {
                return Err(err(format!(
                    "nostr: labelled {label:?}, packet type is {t}"
                )))
            }
            None => return Err(err("nostr: no message label".into())),
        }
        let text = |i: usize, what: &str| -> Result<String, MessageError> {
            items
                .get(i)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| err(format!("nostr[{i}]: {what} missing or not a string")))
        };
        let sub_id = |i: usize| -> Result<String, MessageError> {
            let id = text(i, "subscription id")?;
            if id.is_empty() || id.chars().count() > MAX_SUBSCRIPTION_ID_LEN {
                return Err(err(format!(
                    "nostr[{i}]: subscription id must be 1 to {MAX_SUBSCRIPTION_ID_LEN} characters"
                )));
            }
            Ok(id)
        };
        Ok(match t {
            MessageType::Req => {
                let id = sub_id(1)?;
                let filters = items[2..]
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        serde_json::from_value::<Filter>(f.clone())
                            .map_err(|e| err(format!("nostr[{}]: filter: {e}", i + 2)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if filters.is_empty() {
                    return Err(err("no filter".into()));
                }
                NostrMessage::Req { id, filters }
            }
            MessageType::Close => NostrMessage::Close { id: sub_id(1)? },
            MessageType::Event => {
                let id = sub_id(1)?;
                let raw = items
                    .get(2)
                    .ok_or_else(|| err("nostr[2]: event missing".into()))?;
                let event = serde_json::from_value::<Event>(raw.clone())
                    .map_err(|e| err(format!("nostr[2]: event: {e}")))?;
                NostrMessage::Event {
                    id,
                    event: Box::new(event),
                }
            }
            MessageType::Eose => NostrMessage::Eose { id: sub_id(1)? },
            MessageType::Notice => NostrMessage::Notice {
                message: text(1, "message")?,
            },
            other => {
                return Err(err(format!(
                    "{other} is not a Nostr message this node serves"
                )))
            }
        })
    }

    /// The packet carrying this message, from `sender` at `timestamp` (Unix seconds).
    pub fn to_packet(&self, sender: &str, timestamp: u64) -> Packet {
        let (t, nostr) = match self {
            NostrMessage::Req { id, filters } => {
                let mut items = vec![json!("REQ"), json!(id)];
                items.extend(filters.iter().map(|f| json!(f)));
                (MessageType::Req, Value::Array(items))
            }
            NostrMessage::Close { id } => (MessageType::Close, json!(["CLOSE", id])),
            NostrMessage::Event { id, event } => (MessageType::Event, json!(["EVENT", id, event])),
            NostrMessage::Eose { id } => (MessageType::Eose, json!(["EOSE", id])),
            NostrMessage::Notice { message } => (MessageType::Notice, json!(["NOTICE", message])),
        };
        Packet::nostr(t, nostr, sender, timestamp)
    }
}

/// The OK answering an EVENT: `["OK", id, accepted, message]`.
pub fn ok_packet(id: &EventId, accepted: bool, message: &str, sender: &str, now: u64) -> Packet {
    Packet::nostr(
        MessageType::Ok,
        json!(["OK", id.to_hex(), accepted, message]),
        sender,
        now,
    )
}

/// Reads an OK answer: whether the event was accepted, and the message.
pub fn read_ok(packet: &Packet) -> Result<(bool, String), MessageError> {
    let err = |problem: &str| MessageError {
        message_type: packet.message_type,
        problem: problem.to_owned(),
    };
    if packet.message_type != MessageType::Ok {
        return Err(err("expected OK"));
    }
    let items = packet
        .payload
        .nostr
        .as_array()
        .ok_or_else(|| err("nostr: not an array"))?;
    let accepted = items
        .get(2)
        .and_then(Value::as_bool)
        .ok_or_else(|| err("nostr[2]: accepted flag missing"))?;
    let message = items.get(3).and_then(Value::as_str).unwrap_or_default();
    Ok((accepted, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, Kind};

    const SENDER: &str = "g.btp-nips.a.0011223344556677";

    #[test]
    fn every_message_reads_back_as_written() {
        let keys = Keys::generate();
        let event = EventBuilder::text_note("hi").sign_with_keys(&keys).unwrap();
        let filter = Filter::new().author(keys.public_key()).kind(Kind::TextNote);
        let messages = [
            NostrMessage::Req {
                id: "s1".into(),
                filters: vec![filter.clone()],
            },
            NostrMessage::Close { id: "s1".into() },
            NostrMessage::Event {
                id: "s1".into(),
                event: Box::new(event.clone()),
            },
            NostrMessage::Eose { id: "s1".into() },
            NostrMessage::Notice {
                message: "slow down".into(),
            },
        ];
        for m in messages {
            let packet = m.to_packet(SENDER, 1);
            let bytes = packet.encode().unwrap();
            let back = NostrMessage::read(&Packet::decode(&bytes).unwrap()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{m:?}"));
        }
    }

    #[test]
    fn bad_messages_name_what_is_wrong() {
        let packet = |t, nostr| Packet::nostr(t, nostr, SENDER, 1);
        let cases = [
            (packet(MessageType::Req, json!(["REQ", "s1"])), "no filter"),
            (
                packet(MessageType::Req, json!(["REQ", "", {}])),
                "subscription id",
            ),
            (
                packet(MessageType::Req, json!(["REQ", "x".repeat(65), {}])),
                "subscription id",
            ),
            (
                packet(MessageType::Req, json!(["REQ", "s", {"kinds": "x"}])),
                "nostr[2]: filter",
            ),
            (
                packet(MessageType::Close, json!(["EVENT", "s"])),
                "labelled \"EVENT\"",
            ),
            (
                packet(MessageType::Event, json!(["EVENT", "s", {"id": 1}])),
                "nostr[2]: event",
            ),
            (
                packet(MessageType::Event, json!({"id": 1})),
                "not a NIP-01 message array",
            ),
            (
                packet(MessageType::Notice, json!(["NOTICE"])),
                "message missing",
            ),
        ];
        for (p, expected) in cases {
            let e = NostrMessage::read(&p).unwrap_err().to_string();
            assert!(e.contains(expected), "{e:?} should mention {expected:?}");
        }
    }

    #[test]
    fn ok_answers_read_back() {
        let id = EventId::all_zeros();
        let p = ok_packet(&id, false, "blocked: kind", SENDER, 1);
        assert_eq!(read_ok(&p).unwrap(), (false, "blocked: kind".to_owned()));
    }
}
