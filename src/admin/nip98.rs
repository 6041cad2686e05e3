//! NIP-98 HTTP authorization for the admin API: `Authorization: Nostr <base64 event>`,
//! an event of kind 27235 signed by the operator's key (`nostr.operator_pubkey`) that names
//! the request's full URL (`u` tag) and method (`method` tag), made within
//! `admin.nip98_max_age_seconds` of the node's clock, and, for a request with a body,
//! carrying the body's SHA-256 (`payload` tag). Each event is good for one request: the
//! ids of the events used within the window are remembered (at most
//! `admin.nip98_remembered_events`, the oldest forgotten first), and a replay is refused. It lets a browser signer (NIP-07) drive the
//! API without a token file.
//!
//! The checks are done here rather than by `nostr`'s `nip98::verify_auth_header`: its time
//! window is fixed and its refusals do not say which rule was broken, which an operator
//! debugging a signer needs.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use nostr::hashes::sha256::Hash as Sha256Hash;
use nostr::hashes::Hash;
use nostr::nips::nip19::ToBech32;
use nostr::{Event, EventBuilder, JsonUtil, Keys, Kind, PublicKey, Tag, Timestamp, Url};

/// The kind of a NIP-98 authorization event.
pub const KIND: u16 = 27235;
/// The scheme word of the header.
pub const SCHEME: &str = "Nostr";

/// The request an authorization is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The full URL the client asked for (scheme, host, path and query).
    pub url: &'a str,
    pub method: &'a str,
    /// The body, when the request has a non-empty one.
    pub body: Option<&'a [u8]>,
    /// The node's clock, in seconds since the Unix epoch.
    pub now: u64,
}

/// What the node accepts: the operator's key and the time window.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `nostr.operator_pubkey`; None: no NIP-98 authorization is accepted.
    pub operator: Option<PublicKey>,
    /// `admin.nip98_max_age_seconds`.
    pub max_age_seconds: u64,
}

/// Why an authorization was refused; its text names the broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("NIP-98: the header must be `Nostr <base64 of the event JSON>`: {0}")]
    Malformed(String),
    #[error("NIP-98: wrong kind {0}: an HTTP authorization event is kind {KIND}")]
    WrongKind(u16),
    #[error("NIP-98: bad signature: the event's id or signature does not verify")]
    BadSignature,
    #[error(
        "NIP-98: no operator is configured (nostr.operator_pubkey is empty), so no Nostr \
         authorization is accepted"
    )]
    NoOperator,
    #[error("NIP-98: not the operator: signed by {signer}; only nostr.operator_pubkey ({operator}) may use the admin API")]
    NotOperator { signer: String, operator: String },
    #[error("NIP-98: missing `{0}` tag")]
    MissingTag(&'static str),
    #[error(
        "NIP-98: url mismatch: the event's u tag is `{signed}` but the request is `{request}`"
    )]
    UrlMismatch { signed: String, request: String },
    #[error("NIP-98: method mismatch: the event's method tag is `{signed}` but the request is {request}")]
    MethodMismatch { signed: String, request: String },
    #[error(
        "NIP-98: stale: created_at is {off_seconds} s {direction} the node's clock; at most \
         admin.nip98_max_age_seconds = {max} s"
    )]
    Stale {
        off_seconds: u64,
        direction: &'static str,
        max: u64,
    },
    #[error("NIP-98: payload mismatch: the payload tag is not the SHA-256 of the request body")]
    PayloadMismatch,
    #[error("NIP-98: replayed: this event was already used; sign a new one for each request")]
    Replayed,
}

/// The ids of the authorization events used lately, so each is good for one request.
#[derive(Debug)]
pub struct Replays {
    /// Event id → its created_at.
    seen: std::sync::Mutex<std::collections::HashMap<nostr::EventId, u64>>,
    capacity: usize,
}

impl Replays {
    /// Remembers at most `capacity` events (`admin.nip98_remembered_events`).
    pub fn new(capacity: usize) -> Replays {
        Replays {
            seen: std::sync::Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `event` is used for the first time; events older than `max_age` before
    /// `now` are forgotten (they are refused as stale anyway), and the oldest one when
    /// full.
    fn first_use(&self, event: &Event, now: u64, max_age: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains_key(&event.id) {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, at| at.saturating_add(max_age) >= now);
        }
        if seen.len() >= self.capacity {
            if let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id) {
                seen.remove(&oldest);
            }
        }
        seen.insert(event.id, event.created_at.as_secs());
        true
    }
}

/// Whether an `Authorization` header value uses the Nostr scheme.
pub fn is_nostr(header: &str) -> bool {
    header
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(SCHEME))
}

fn tag_value<'e>(event: &'e Event, name: &'static str) -> Option<&'e str> {
    event.tags.iter().find_map(|t| match t.as_slice() {
        [key, value, ..] if key == name => Some(value.as_str()),
        _ => None,
    })
}

fn show(key: &PublicKey) -> String {
    key.to_bech32().unwrap_or_else(|_| key.to_hex())
}

/// Two URLs name the same resource (compared parsed, so `HTTP://Host:80/x` and
/// `http://host/x` agree).
fn same_url(signed: &str, request: &str) -> bool {
    match (Url::parse(signed), Url::parse(request)) {
        (Ok(a), Ok(b)) => a == b,
        _ => signed == request,
    }
}

/// Checks `header` against `request`; the operator's key when every rule holds and the
/// event was not used before.
pub fn verify(
    header: &str,
    request: Request<'_>,
    policy: &Policy,
    replays: &Replays,
) -> Result<PublicKey, Refusal> {
    let encoded = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(SCHEME))
        .map(|(_, rest)| rest.trim())
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| Refusal::Malformed("no event after `Nostr`".into()))?;
    let json = STANDARD
        .decode(encoded)
        .map_err(|e| Refusal::Malformed(format!("not base64: {e}")))?;
    let event = Event::from_json(&json)
        .map_err(|e| Refusal::Malformed(format!("not a Nostr event: {e}")))?;
    if event.kind != Kind::HttpAuth {
        return Err(Refusal::WrongKind(event.kind.as_u16()));
    }
    event.verify().map_err(|_| Refusal::BadSignature)?;
    let operator = policy.operator.ok_or(Refusal::NoOperator)?;
    if event.pubkey != operator {
        return Err(Refusal::NotOperator {
            signer: show(&event.pubkey),
            operator: show(&operator),
        });
    }
    let signed_url = tag_value(&event, "u").ok_or(Refusal::MissingTag("u"))?;
    if !same_url(signed_url, request.url) {
        return Err(Refusal::UrlMismatch {
            signed: signed_url.to_string(),
            request: request.url.to_string(),
        });
    }
    let signed_method = tag_value(&event, "method").ok_or(Refusal::MissingTag("method"))?;
    if !signed_method.eq_ignore_ascii_case(request.method) {
        return Err(Refusal::MethodMismatch {
            signed: signed_method.to_string(),
            request: request.method.to_string(),
        });
    }
    let created = event.created_at.as_secs();
    let (off_seconds, direction) = if created <= request.now {
        (request.now - created, "behind")
    } else {
        (created - request.now, "ahead of")
    };
    if off_seconds > policy.max_age_seconds {
        return Err(Refusal::Stale {
            off_seconds,
            direction,
            max: policy.max_age_seconds,
        });
    }
    if let Some(body) = request.body.filter(|b| !b.is_empty()) {
        let signed = tag_value(&event, "payload").ok_or(Refusal::MissingTag("payload"))?;
        let actual = Sha256Hash::hash(body).to_string();
        if !signed.eq_ignore_ascii_case(&actual) {
            return Err(Refusal::PayloadMismatch);
        }
    }
    if !replays.first_use(&event, request.now, policy.max_age_seconds) {
        return Err(Refusal::Replayed);
    }
    Ok(operator)
}

/// An authorization event for `method url` (and `body`), made at `created_at`, signed with
/// `keys`: what a client (a browser signer, the tests) sends.
pub fn sign(
    keys: &Keys,
    url: &str,
    method: &str,
    body: Option<&[u8]>,
    created_at: u64,
) -> Result<Event, nostr::event::builder::Error> {
    sign_kind(keys, Kind::HttpAuth, url, method, body, created_at)
}

/// [`sign`] with any kind (a client that gets the kind wrong).
pub fn sign_kind(
    keys: &Keys,
    kind: Kind,
    url: &str,
    method: &str,
    body: Option<&[u8]>,
    created_at: u64,
) -> Result<Event, nostr::event::builder::Error> {
    let mut tags = vec![
        Tag::parse(["u", url]).expect("a two-element tag"),
        Tag::parse(["method", method]).expect("a two-element tag"),
    ];
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        let hash = Sha256Hash::hash(body).to_string();
        tags.push(Tag::parse(["payload", hash.as_str()]).expect("a two-element tag"));
    }
    EventBuilder::new(kind, "")
        .tags(tags)
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(keys)
}

/// The `Authorization` header value carrying `event`.
pub fn header(event: &Event) -> String {
    format!("{SCHEME} {}", STANDARD.encode(event.as_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:7701/v1/peers/ab/retry";
    const NOW: u64 = 1_800_000_000;

    fn policy(operator: &Keys) -> Policy {
        Policy {
            operator: Some(operator.public_key()),
            max_age_seconds: 60,
        }
    }

    fn request(body: Option<&'static [u8]>) -> Request<'static> {
        Request {
            url: URL,
            method: "POST",
            body,
            now: NOW,
        }
    }

    #[test]
    fn the_operators_event_for_this_request_is_accepted() {
        let keys = Keys::generate();
        let event = sign(&keys, URL, "POST", Some(b"{}"), NOW - 5).unwrap();
        let got = verify(
            &header(&event),
            request(Some(b"{}")),
            &policy(&keys),
            &Replays::new(8),
        );
        assert_eq!(got, Ok(keys.public_key()));
        // Lower-case scheme, an upper-case host: the same request.
        let event = sign(
            &keys,
            "http://127.0.0.1:7701/v1/peers/ab/retry",
            "post",
            None,
            NOW + 5,
        )
        .unwrap();
        let value = header(&event).replacen("Nostr", "nostr", 1);
        assert!(verify(&value, request(None), &policy(&keys), &Replays::new(8)).is_ok());
    }

    #[test]
    fn each_broken_rule_is_named() {
        let keys = Keys::generate();
        let p = policy(&keys);
        let check = |event: &Event, body: Option<&'static [u8]>| {
            verify(&header(event), request(body), &p, &Replays::new(8)).unwrap_err()
        };
        let e = sign_kind(&keys, Kind::TextNote, URL, "POST", None, NOW).unwrap();
        assert_eq!(check(&e, None), Refusal::WrongKind(1));
        let e = sign(&keys, "http://127.0.0.1:7701/v1/info", "POST", None, NOW).unwrap();
        assert!(matches!(check(&e, None), Refusal::UrlMismatch { .. }));
        let e = sign(&keys, URL, "GET", None, NOW).unwrap();
        assert!(matches!(check(&e, None), Refusal::MethodMismatch { .. }));
        let e = sign(&keys, URL, "POST", None, NOW - 61).unwrap();
        let stale = check(&e, None);
        assert!(matches!(
            stale,
            Refusal::Stale {
                off_seconds: 61,
                ..
            }
        ));
        assert!(stale.to_string().contains("admin.nip98_max_age_seconds"));
        let e = sign(&keys, URL, "POST", None, NOW).unwrap();
        assert_eq!(check(&e, Some(b"{}")), Refusal::MissingTag("payload"));
        let e = sign(&keys, URL, "POST", Some(b"{\"a\":1}"), NOW).unwrap();
        assert_eq!(check(&e, Some(b"{}")), Refusal::PayloadMismatch);
        let stranger = Keys::generate();
        let e = sign(&stranger, URL, "POST", None, NOW).unwrap();
        assert!(matches!(check(&e, None), Refusal::NotOperator { .. }));
        let none = Policy {
            operator: None,
            max_age_seconds: 60,
        };
        let e = sign(&keys, URL, "POST", None, NOW).unwrap();
        assert_eq!(
            verify(&header(&e), request(None), &none, &Replays::new(8)),
            Err(Refusal::NoOperator)
        );
        // The operator's key on a tampered event: the signature no longer holds.
        let mut json: serde_json::Value = serde_json::from_str(&e.as_json()).unwrap();
        json["created_at"] = (NOW + 1).into();
        let forged = format!("Nostr {}", STANDARD.encode(json.to_string()));
        assert_eq!(
            verify(&forged, request(None), &p, &Replays::new(8)),
            Err(Refusal::BadSignature)
        );
        assert!(matches!(
            verify("Nostr !!!", request(None), &p, &Replays::new(8)),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn an_event_is_good_for_one_request_and_the_memory_is_bounded() {
        let keys = Keys::generate();
        let p = policy(&keys);
        let replays = Replays::new(2);
        let events: Vec<Event> = (0..3)
            .map(|i| sign(&keys, URL, "POST", None, NOW - 10 + i).unwrap())
            .collect();
        let use_ = |e: &Event| verify(&header(e), request(None), &p, &replays);
        assert!(use_(&events[0]).is_ok());
        assert_eq!(use_(&events[0]), Err(Refusal::Replayed));
        assert!(use_(&events[1]).is_ok());
        // Full: the oldest is forgotten to remember the newest.
        assert!(use_(&events[2]).is_ok());
        assert_eq!(replays.seen.lock().unwrap().len(), 2);
        assert_eq!(use_(&events[2]), Err(Refusal::Replayed));
        assert_eq!(use_(&events[1]), Err(Refusal::Replayed));
    }
}
