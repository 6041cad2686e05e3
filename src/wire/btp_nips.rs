//! BTP-NIPs packets: Nostr messages carried in the data of ILP packets.
//!
//! Layout: a 4-byte header — version (`u8`, 1), message type (`u8`), payload length
//! (`u16` big-endian) — then the payload, UTF-8 JSON:
//!
//! ```json
//! { "payment":  { "amount": "0", "currency": "msat", "purpose": "event_publish" },
//!   "nostr":    ["EVENT", { "id": "…", "kind": 1, "…": "…" }],
//!   "metadata": { "timestamp": 1735689600, "sender": "g.btp-nips.node.0123456789abcdef",
//!                 "ttl": 60, "nonce": "9f86d081884c7d65" } }
//! ```
//!
//! * `payment.amount` is a decimal string (as the parent project sends it);
//!   `payment.purpose` may be absent (read as empty).
//! * `nostr` is any JSON, normally the NIP-01 message array.
//! * `metadata.timestamp` is Unix seconds (an integer); `ttl` (seconds) is optional.
//! * `metadata.nonce` (optional string) is this node's heartbeat extension: a PING
//!   carries a fresh nonce and the PONG echoes it verbatim; both are required to have
//!   one. Other types may omit it, and it is left out of the JSON when absent, so
//!   packets of the parent project's format are unchanged.
//! * Unknown JSON fields are ignored (forward compatibility).
//!
//! A packet travels as the data of a zero-amount ILP Prepare to [`DESTINATION`] with
//! the bilateral control condition; the answer comes back in the Fulfill's data. So
//! a whole packet is at most 32767 bytes (the ILP data limit): a larger one is refused
//! when encoding, never cut.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::{btp, ilp, oer};

/// The only version.
pub const VERSION: u8 = 1;
/// Header size.
pub const HEADER_LEN: usize = 4;
/// Largest whole packet: the ILP data limit.
pub const MAX_PACKET_LEN: usize = ilp::MAX_DATA_LEN;
/// Largest payload.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - HEADER_LEN;
/// ILP destination of BTP-NIPs packets between neighbours.
pub const DESTINATION: &str = "peer.btp-nips";

/// A BTP-NIPs packet that could not be encoded or decoded; messages start with
/// `BTP-NIPs` and name the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BtpNipsError {
    /// Fewer than 4 bytes.
    #[error("BTP-NIPs: header: {length} bytes, need 4")]
    Truncated { length: usize },
    /// A version other than 1.
    #[error("BTP-NIPs: version: unsupported version {0} (expected 1)")]
    UnsupportedVersion(u8),
    /// A message type outside 1..=9.
    #[error("BTP-NIPs: message type: unknown type {0}")]
    UnknownMessageType(u8),
    /// The length field disagrees with the bytes that follow the header.
    #[error("BTP-NIPs: payload length: header says {declared} bytes, {actual} follow")]
    LengthMismatch { declared: u16, actual: usize },
    /// A packet over the ILP data limit.
    #[error("BTP-NIPs: packet of {size} bytes exceeds the ILP data limit of {max} bytes (refused, never truncated)")]
    TooLarge { size: usize, max: usize },
    /// A payload that is not UTF-8.
    #[error("BTP-NIPs: payload: not UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    /// A payload that is not the expected JSON (serde's message names the field).
    #[error("BTP-NIPs: payload: invalid JSON: {0}")]
    InvalidJson(String),
    /// A PING or PONG without `metadata.nonce`.
    #[error("BTP-NIPs: {0}: metadata.nonce: missing (required for PING and PONG)")]
    MissingNonce(MessageType),
    /// A PONG requested for something that is not a PING.
    #[error("BTP-NIPs: message type: expected PING, found {0}")]
    NotAPing(MessageType),
}

/// Message type (header byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// NIP-01 `EVENT`.
    Event = 1,
    /// NIP-01 `REQ`.
    Req = 2,
    /// NIP-01 `CLOSE`.
    Close = 3,
    /// NIP-01 `NOTICE`.
    Notice = 4,
    /// NIP-01 `EOSE`.
    Eose = 5,
    /// NIP-01 `OK`.
    Ok = 6,
    /// NIP-42 `AUTH`.
    Auth = 7,
    /// Heartbeat request (this node's extension); carries `metadata.nonce`.
    Ping = 8,
    /// Heartbeat answer; echoes the PING's `metadata.nonce`.
    Pong = 9,
}

impl MessageType {
    /// The type of a header byte.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => MessageType::Event,
            2 => MessageType::Req,
            3 => MessageType::Close,
            4 => MessageType::Notice,
            5 => MessageType::Eose,
            6 => MessageType::Ok,
            7 => MessageType::Auth,
            8 => MessageType::Ping,
            9 => MessageType::Pong,
            _ => return None,
        })
    }

    /// The header byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Upper-case name (`EVENT`, …, `PONG`), as NIP-01 spells message labels.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Event => "EVENT",
            MessageType::Req => "REQ",
            MessageType::Close => "CLOSE",
            MessageType::Notice => "NOTICE",
            MessageType::Eose => "EOSE",
            MessageType::Ok => "OK",
            MessageType::Auth => "AUTH",
            MessageType::Ping => "PING",
            MessageType::Pong => "PONG",
        }
    }

    fn needs_nonce(self) -> bool {
        matches!(self, MessageType::Ping | MessageType::Pong)
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `payment`: what the sender pays for this message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Amount in the smallest unit, as a decimal string.
    pub amount: String,
    /// Unit (`msat`, …).
    pub currency: String,
    /// Why (`event_publish`, `subscription`, …); empty when absent.
    #[serde(default)]
    pub purpose: String,
}

impl Payment {
    /// A zero payment for `purpose` (heartbeats, control traffic).
    pub fn free(purpose: &str) -> Self {
        Payment {
            amount: "0".to_owned(),
            currency: String::new(),
            purpose: purpose.to_owned(),
        }
    }

    /// The amount as a number, if it is a plain decimal `u64`.
    pub fn amount_value(&self) -> Option<u64> {
        if self.amount.is_empty() || !self.amount.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.amount.parse().ok()
    }
}

/// `metadata`: about the message itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// When it was sent, Unix seconds.
    pub timestamp: u64,
    /// ILP address of the sender.
    pub sender: String,
    /// How long it stays relevant, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Heartbeat nonce: required on PING and PONG (the PONG echoes the PING's),
    /// absent otherwise. An opaque string, e.g. 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// What is paid.
    pub payment: Payment,
    /// The Nostr message (normally a NIP-01 array such as `["EVENT", {…}]`).
    pub nostr: Value,
    /// About the message.
    pub metadata: Metadata,
}

/// A BTP-NIPs packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Header byte 1.
    pub message_type: MessageType,
    /// The JSON payload.
    pub payload: Payload,
}

impl Packet {
    /// A packet.
    pub fn new(message_type: MessageType, payload: Payload) -> Self {
        Packet {
            message_type,
            payload,
        }
    }

    /// A free (zero-payment) packet carrying the NIP-01 message `nostr`, from `sender` at
    /// `timestamp` (Unix seconds); the payment's purpose is the message type in lower case.
    pub fn nostr(message_type: MessageType, nostr: Value, sender: &str, timestamp: u64) -> Self {
        Packet::new(
            message_type,
            Payload {
                payment: Payment::free(&message_type.name().to_ascii_lowercase()),
                nostr,
                metadata: Metadata {
                    timestamp,
                    sender: sender.to_owned(),
                    ttl: None,
                    nonce: None,
                },
            },
        )
    }

    /// A heartbeat PING from `sender` at `timestamp` (Unix seconds); `nostr` is null.
    pub fn ping(sender: &str, timestamp: u64, nonce: impl Into<String>) -> Self {
        Packet::new(
            MessageType::Ping,
            Payload {
                payment: Payment::free("ping"),
                nostr: Value::Null,
                metadata: Metadata {
                    timestamp,
                    sender: sender.to_owned(),
                    ttl: None,
                    nonce: Some(nonce.into()),
                },
            },
        )
    }

    /// The PONG answering `ping`, echoing its nonce.
    pub fn pong(ping: &Packet, sender: &str, timestamp: u64) -> Result<Self, BtpNipsError> {
        if ping.message_type != MessageType::Ping {
            return Err(BtpNipsError::NotAPing(ping.message_type));
        }
        let nonce = ping
            .nonce()
            .ok_or(BtpNipsError::MissingNonce(MessageType::Ping))?;
        let mut pong = Packet::ping(sender, timestamp, nonce);
        pong.message_type = MessageType::Pong;
        pong.payload.payment.purpose = "pong".to_owned();
        Ok(pong)
    }

    /// The heartbeat nonce, if any.
    pub fn nonce(&self) -> Option<&str> {
        self.payload.metadata.nonce.as_deref()
    }

    fn check_nonce(&self) -> Result<(), BtpNipsError> {
        check_nonce(self.message_type, self.payload.metadata.nonce.is_some())
    }

    /// Encode: header and compact JSON. Refuses (never truncates) a packet over
    /// 32767 bytes, and a PING/PONG without nonce.
    pub fn encode(&self) -> Result<Vec<u8>, BtpNipsError> {
        self.check_nonce()?;
        // The JSON is written after the header in one buffer; the length is filled in after.
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[VERSION, self.message_type.as_u8(), 0, 0]);
        serde_json::to_writer(&mut out, &self.payload)
            .map_err(|e| BtpNipsError::InvalidJson(e.to_string()))?;
        seal(out)
    }

    /// Decode: checks version, type, that the length field equals the bytes after the
    /// header exactly, the size limit, UTF-8, the JSON shape, and the PING/PONG nonce.
    pub fn decode(bytes: &[u8]) -> Result<Self, BtpNipsError> {
        let (message_type, text) = split(bytes)?;
        let payload: Payload =
            serde_json::from_str(text).map_err(|e| BtpNipsError::InvalidJson(e.to_string()))?;
        let packet = Packet {
            message_type,
            payload,
        };
        packet.check_nonce()?;
        Ok(packet)
    }

    /// The zero-amount ILP Prepare to [`DESTINATION`] carrying this packet.
    pub fn to_prepare(&self, expires_at: ilp::Timestamp) -> Result<ilp::Prepare, BtpNipsError> {
        Ok(control_prepare(self.encode()?, expires_at))
    }

    /// The ILP Fulfill carrying this packet as the answer to a control Prepare.
    pub fn to_fulfill(&self) -> Result<ilp::Fulfill, BtpNipsError> {
        Ok(ilp::Fulfill::peer_control(self.encode()?))
    }
}

/// The message type and the JSON text of a packet, after checking version, type, that the
/// length field equals the bytes after the header exactly, the size limit and UTF-8.
fn split(bytes: &[u8]) -> Result<(MessageType, &str), BtpNipsError> {
    let (header, payload) = match bytes.split_first_chunk::<HEADER_LEN>() {
        Some(split) => split,
        None => {
            return Err(BtpNipsError::Truncated {
                length: bytes.len(),
            })
        }
    };
    let [version, message_type, len_hi, len_lo] = *header;
    if version != VERSION {
        return Err(BtpNipsError::UnsupportedVersion(version));
    }
    let message_type =
        MessageType::from_u8(message_type).ok_or(BtpNipsError::UnknownMessageType(message_type))?;
    let declared = u16::from_be_bytes([len_hi, len_lo]);
    if usize::from(declared) != payload.len() {
        return Err(BtpNipsError::LengthMismatch {
            declared,
            actual: payload.len(),
        });
    }
    if bytes.len() > MAX_PACKET_LEN {
        return Err(BtpNipsError::TooLarge {
            size: bytes.len(),
            max: MAX_PACKET_LEN,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|e| BtpNipsError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    Ok((message_type, text))
}

/// A heartbeat PING from `sender` at `timestamp` (Unix seconds) with `nonce` as 16
/// hexadecimal digits: the bytes `Packet::ping(sender, timestamp, nonce).encode()` gives,
/// written straight from the parts (a PING leaves every peer every interval).
pub fn encode_ping(sender: &str, timestamp: u64, nonce: u64) -> Result<Vec<u8>, BtpNipsError> {
    #[derive(Serialize)]
    struct Ping<'a> {
        payment: Free,
        nostr: (),
        metadata: PingMetadata<'a>,
    }
    #[derive(Serialize)]
    struct Free {
        amount: &'static str,
        currency: &'static str,
        purpose: &'static str,
    }
    #[derive(Serialize)]
    struct PingMetadata<'a> {
        timestamp: u64,
        sender: &'a str,
        nonce: &'a str,
    }
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((nonce >> (60 - 4 * i)) & 0xf) as usize];
    }
    let ping = Ping {
        payment: Free {
            amount: "0",
            currency: "",
            purpose: "ping",
        },
        nostr: (),
        metadata: PingMetadata {
            timestamp,
            sender,
            nonce: std::str::from_utf8(&hex).expect("hexadecimal digits are ASCII"),
        },
    };
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(&[VERSION, MessageType::Ping.as_u8(), 0, 0]);
    serde_json::to_writer(&mut out, &ping).map_err(|e| BtpNipsError::InvalidJson(e.to_string()))?;
    seal(out)
}

/// The message type and heartbeat nonce of a packet, read without building it: `bytes`
/// is accepted exactly when [`Packet::decode`] accepts it, and the nonce is the one it
/// would hold (a PONG's answer is read this way).
pub fn decode_nonce(bytes: &[u8]) -> Result<(MessageType, Option<Cow<'_, str>>), BtpNipsError> {
    // The shape `Payload` requires, borrowed where the JSON allows it.
    #[derive(Deserialize)]
    struct View<'a> {
        #[serde(borrow)]
        #[allow(dead_code)]
        payment: PaymentView<'a>,
        // As parsed for `Payload` (numbers range-checked): `null` in a PONG.
        #[allow(dead_code)]
        nostr: Value,
        #[serde(borrow)]
        metadata: MetadataView<'a>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct PaymentView<'a> {
        #[serde(borrow)]
        amount: Cow<'a, str>,
        #[serde(borrow)]
        currency: Cow<'a, str>,
        #[serde(default, borrow)]
        purpose: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct MetadataView<'a> {
        timestamp: u64,
        #[serde(borrow)]
        sender: Cow<'a, str>,
        #[serde(default)]
        ttl: Option<u64>,
        #[serde(default, borrow)]
        nonce: Option<Cow<'a, str>>,
    }
    let (message_type, text) = split(bytes)?;
    let view: View<'_> =
        serde_json::from_str(text).map_err(|e| BtpNipsError::InvalidJson(e.to_string()))?;
    let nonce = view.metadata.nonce;
    check_nonce(message_type, nonce.is_some())?;
    Ok((message_type, nonce))
}

/// A PING or PONG must carry a nonce; other types may.
fn check_nonce(message_type: MessageType, has_nonce: bool) -> Result<(), BtpNipsError> {
    if message_type.needs_nonce() && !has_nonce {
        return Err(BtpNipsError::MissingNonce(message_type));
    }
    Ok(())
}

/// Fills in the length of a packet written after its header, refusing one over the limit.
fn seal(mut out: Vec<u8>) -> Result<Vec<u8>, BtpNipsError> {
    let size = out.len();
    let declared = match u16::try_from(size - HEADER_LEN) {
        Ok(n) if size <= MAX_PACKET_LEN => n,
        _ => {
            return Err(BtpNipsError::TooLarge {
                size,
                max: MAX_PACKET_LEN,
            })
        }
    };
    out[2..HEADER_LEN].copy_from_slice(&declared.to_be_bytes());
    Ok(out)
}

/// The whole BTP Message that carries a heartbeat PING, as request `request_id`: one `ilp`
/// entry holding the zero-amount Prepare to [`DESTINATION`], expiring at `expires_at`,
/// whose data is [`encode_ping`]'s packet. The bytes
/// `btp::Packet::ilp_message(request_id, control_prepare(ping, expires_at).encode()?).encode()?`
/// give, written into one buffer sized up front instead of a buffer per layer (every
/// peer's PING, every interval).
pub fn ping_message(
    request_id: u32,
    sender: &str,
    timestamp: u64,
    nonce: u64,
    expires_at: ilp::Timestamp,
) -> Result<Vec<u8>, BtpNipsError> {
    // At most MAX_PACKET_LEN (the ILP data limit) once sealed, so every layer fits.
    let ping = encode_ping(sender, timestamp, nonce)?;
    let destination = DESTINATION.as_bytes();
    let prepare_len = 8
        + ilp::TIMESTAMP_LEN
        + ilp::PEER_PROTOCOL_CONDITION.len()
        + oer::var_octets_size(destination.len())
        + oer::var_octets_size(ping.len());
    let ilp_len = 1 + oer::var_octets_size(prepare_len);
    let contents_len = oer::var_uint_size(1)
        + oer::var_octets_size(btp::PROTOCOL_ILP.len())
        + 1
        + oer::var_octets_size(ilp_len);
    let total = 1 + 4 + oer::var_octets_size(contents_len);
    let mut w = oer::Writer::with_capacity(total);
    // BTP Message: type, request id, its contents (one protocol entry).
    w.write_u8(btp::TYPE_MESSAGE);
    w.write_u32(request_id);
    w.write_length(contents_len);
    w.write_var_uint(1);
    w.write_var_octets(btp::PROTOCOL_ILP.as_bytes());
    w.write_u8(btp::ContentType::OctetStream.as_u8());
    // The entry's data: the enveloped ILP Prepare.
    w.write_length(ilp_len);
    w.write_u8(ilp::TYPE_PREPARE);
    w.write_length(prepare_len);
    w.write_u64(0);
    w.write_bytes(expires_at.as_bytes());
    w.write_bytes(&ilp::PEER_PROTOCOL_CONDITION);
    w.write_var_octets(destination);
    w.write_var_octets(&ping);
    debug_assert_eq!(w.len(), total);
    Ok(w.into_inner())
}

/// The zero-amount ILP Prepare to [`DESTINATION`] carrying the encoded packet `data`.
pub fn control_prepare(data: Vec<u8>, expires_at: ilp::Timestamp) -> ilp::Prepare {
    let destination = ilp::Address::new(DESTINATION).expect("DESTINATION is a valid address");
    ilp::Prepare::peer_control(destination, expires_at, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn event_packet() -> Packet {
        Packet::new(
            MessageType::Event,
            Payload {
                payment: Payment {
                    amount: "1000".into(),
                    currency: "msat".into(),
                    purpose: "event_publish".into(),
                },
                nostr: json!(["EVENT", {"id": "ab", "kind": 1, "tags": [], "content": "hi"}]),
                metadata: Metadata {
                    timestamp: 1_735_689_600,
                    sender: "g.btp-nips.alice.0123456789abcdef".into(),
                    ttl: Some(60),
                    nonce: None,
                },
            },
        )
    }

    #[test]
    fn exact_bytes_of_a_hand_built_packet() {
        let json = br#"{"payment":{"amount":"1000","currency":"msat","purpose":"event_publish"},"nostr":["EVENT",{"content":"hi","id":"ab","kind":1,"tags":[]}],"metadata":{"timestamp":1735689600,"sender":"g.btp-nips.alice.0123456789abcdef","ttl":60}}"#;
        let mut expected = vec![1, 1];
        expected.extend_from_slice(&(json.len() as u16).to_be_bytes());
        expected.extend_from_slice(json);
        assert_eq!(event_packet().encode().unwrap(), expected);
        assert_eq!(Packet::decode(&expected).unwrap(), event_packet());
    }

    #[test]
    fn parent_format_decodes() {
        // As the parent project writes it: pretty JSON, purpose absent, an object
        // (not a NIP-01 array) as `nostr`, no ttl nor nonce, an unknown extra field.
        let json = r#"{
            "payment": {"amount": "5", "currency": "msat"},
            "nostr": {"subId": "s1"},
            "metadata": {"timestamp": 1700000000, "sender": "g.dassie.alice"},
            "extra": true
        }"#;
        let mut bytes = vec![1, 3];
        bytes.extend_from_slice(&(json.len() as u16).to_be_bytes());
        bytes.extend_from_slice(json.as_bytes());
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.message_type, MessageType::Close);
        assert_eq!(p.payload.payment.purpose, "");
        assert_eq!(p.payload.payment.amount_value(), Some(5));
        assert_eq!(p.payload.nostr, json!({"subId": "s1"}));
        assert_eq!(p.payload.metadata.ttl, None);
    }

    #[test]
    fn ping_pong() {
        let ping = Packet::ping(
            "g.btp-nips.a.0011223344556677",
            1_700_000_000,
            "9f86d081884c7d65",
        );
        let bytes = ping.encode().unwrap();
        assert_eq!(&bytes[..2], &[1, 8]);
        let text = std::str::from_utf8(&bytes[4..]).unwrap();
        assert!(text.contains(r#""nonce":"9f86d081884c7d65""#), "{text}");
        let decoded = Packet::decode(&bytes).unwrap();
        assert_eq!(decoded, ping);
        let pong = Packet::pong(&decoded, "g.btp-nips.b.8899aabbccddeeff", 1_700_000_001).unwrap();
        assert_eq!(pong.message_type, MessageType::Pong);
        assert_eq!(pong.nonce(), Some("9f86d081884c7d65"));
        let pong_bytes = pong.encode().unwrap();
        assert_eq!(pong_bytes[1], 9);
        assert_eq!(Packet::decode(&pong_bytes).unwrap(), pong);
        assert_eq!(
            Packet::pong(&pong, "g.x.y", 0).unwrap_err(),
            BtpNipsError::NotAPing(MessageType::Pong)
        );
        // A PING without nonce is refused both ways.
        let mut bare = ping.clone();
        bare.payload.metadata.nonce = None;
        assert_eq!(
            bare.encode().unwrap_err().to_string(),
            "BTP-NIPs: PING: metadata.nonce: missing (required for PING and PONG)"
        );
        let mut forged = event_packet().encode().unwrap();
        forged[1] = 8;
        assert_eq!(
            Packet::decode(&forged).unwrap_err(),
            BtpNipsError::MissingNonce(MessageType::Ping)
        );
    }

    #[test]
    fn carried_in_ilp() {
        let ping = Packet::ping("g.a.b", 1, "n");
        let prepare = ping
            .to_prepare("20300101000000000".parse().unwrap())
            .unwrap();
        assert!(prepare.is_peer_control());
        assert_eq!(prepare.destination.as_str(), "peer.btp-nips");
        let bytes = prepare.encode().unwrap();
        let back = ilp::Prepare::decode(&bytes).unwrap();
        assert_eq!(Packet::decode(&back.data).unwrap(), ping);
        let pong = Packet::pong(&ping, "g.c.d", 2).unwrap();
        let fulfill = pong.to_fulfill().unwrap();
        assert_eq!(fulfill.fulfillment, ilp::PEER_PROTOCOL_FULFILLMENT);
        assert_eq!(Packet::decode(&fulfill.data).unwrap(), pong);
    }

    #[test]
    fn oversize_is_refused_not_truncated() {
        let mut p = event_packet();
        let base = p.encode().unwrap().len();
        // Grow the content so the packet is exactly at the limit, then one byte over.
        let room = MAX_PACKET_LEN - base;
        p.payload.nostr = json!(["EVENT", {"id": "ab", "kind": 1, "tags": [], "content": format!("hi{}", "x".repeat(room))}]);
        let bytes = p.encode().unwrap();
        assert_eq!(bytes.len(), MAX_PACKET_LEN);
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
        p.payload.nostr = json!(["EVENT", {"id": "ab", "kind": 1, "tags": [], "content": format!("hi{}", "x".repeat(room + 1))}]);
        assert_eq!(
            p.encode().unwrap_err(),
            BtpNipsError::TooLarge {
                size: MAX_PACKET_LEN + 1,
                max: MAX_PACKET_LEN
            }
        );
        assert!(p
            .encode()
            .unwrap_err()
            .to_string()
            .contains("never truncated"));
        // A 40000-byte packet with a consistent header is refused when decoding too.
        let mut big = vec![1, 1];
        big.extend_from_slice(&39_996u16.to_be_bytes());
        big.extend(std::iter::repeat_n(b' ', 39_996));
        assert!(matches!(
            Packet::decode(&big),
            Err(BtpNipsError::TooLarge { size: 40_000, .. })
        ));
    }

    #[test]
    fn header_errors() {
        let good = event_packet().encode().unwrap();
        assert_eq!(
            Packet::decode(&[1, 1]).unwrap_err().to_string(),
            "BTP-NIPs: header: 2 bytes, need 4"
        );
        let mut v = good.clone();
        v[0] = 2;
        assert_eq!(
            Packet::decode(&v).unwrap_err(),
            BtpNipsError::UnsupportedVersion(2)
        );
        for t in [0u8, 10, 255] {
            let mut v = good.clone();
            v[1] = t;
            assert_eq!(
                Packet::decode(&v).unwrap_err(),
                BtpNipsError::UnknownMessageType(t)
            );
        }
        let mut v = good.clone();
        v.push(b' ');
        assert_eq!(
            Packet::decode(&v).unwrap_err().to_string(),
            format!(
                "BTP-NIPs: payload length: header says {} bytes, {} follow",
                good.len() - 4,
                good.len() - 3
            )
        );
        let mut v = vec![1, 1, 0, 3];
        v.extend_from_slice(&[b'"', 0xff, b'"']);
        assert_eq!(
            Packet::decode(&v).unwrap_err().to_string(),
            "BTP-NIPs: payload: not UTF-8 (invalid byte at offset 1)"
        );
        let json = br#"{"nostr":[],"metadata":{"timestamp":1,"sender":"g.a"}}"#;
        let mut v = vec![1, 1, 0, json.len() as u8];
        v.extend_from_slice(json);
        let err = Packet::decode(&v).unwrap_err().to_string();
        assert!(
            err.starts_with("BTP-NIPs: payload: invalid JSON: missing field `payment`"),
            "{err}"
        );
        let json = br#"{"payment":{"amount":"1","currency":"msat"},"metadata":{"timestamp":1,"sender":"g.a"}}"#;
        let mut v = vec![1, 1, 0, json.len() as u8];
        v.extend_from_slice(json);
        let err = Packet::decode(&v).unwrap_err().to_string();
        assert!(err.contains("missing field `nostr`"), "{err}");
    }

    #[test]
    fn truncated_at_every_offset() {
        let bytes = event_packet().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Packet::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn packet_strategy() -> impl Strategy<Value = Packet> {
        (
            1u8..=9,
            any::<String>(),
            any::<String>(),
            any::<String>(),
            json_value(),
            any::<u64>(),
            any::<String>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<String>()),
        )
            .prop_map(
                |(t, amount, currency, purpose, nostr, timestamp, sender, ttl, nonce)| {
                    let message_type = MessageType::from_u8(t).unwrap();
                    let nonce = if message_type.needs_nonce() {
                        Some(nonce.unwrap_or_default())
                    } else {
                        nonce
                    };
                    Packet::new(
                        message_type,
                        Payload {
                            payment: Payment {
                                amount,
                                currency,
                                purpose,
                            },
                            nostr,
                            metadata: Metadata {
                                timestamp,
                                sender,
                                ttl,
                                nonce,
                            },
                        },
                    )
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip(packet in packet_strategy()) {
            let bytes = packet.encode().unwrap();
            prop_assert!(bytes.len() <= MAX_PACKET_LEN);
            prop_assert_eq!(Packet::decode(&bytes).unwrap(), packet);
            for cut in [0, 3, 4, bytes.len() - 1] {
                prop_assert!(Packet::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn a_ping_written_from_its_parts_is_the_packets_encoding(
            sender in any::<String>(),
            timestamp in any::<u64>(),
            nonce in any::<u64>(),
        ) {
            let packet = Packet::ping(&sender, timestamp, format!("{nonce:016x}"));
            prop_assert_eq!(encode_ping(&sender, timestamp, nonce), packet.encode());
        }

        #[test]
        fn a_ping_message_written_in_one_buffer_is_the_layers_encoding(
            request_id in any::<u32>(),
            sender in prop_oneof![any::<String>(), "[a-z.]{0,300}"],
            timestamp in any::<u64>(),
            nonce in any::<u64>(),
            expiry_ms in any::<u64>(),
        ) {
            let expires_at =
                ilp::Timestamp::from_unix_millis((expiry_ms % 253_402_300_799_999) as i64).unwrap();
            let layered = encode_ping(&sender, timestamp, nonce).map(|ping| {
                let prepare = control_prepare(ping, expires_at).encode().unwrap();
                btp::Packet::ilp_message(request_id, prepare).encode().unwrap()
            });
            prop_assert_eq!(
                ping_message(request_id, &sender, timestamp, nonce, expires_at),
                layered
            );
        }

        #[test]
        fn the_nonce_reader_accepts_exactly_what_decode_accepts(
            t in 0u8..11,
            payment in prop_oneof![
                Just(None),
                Just(Some(r#"{"amount":"0","currency":""}"#)),
                Just(Some(r#"{"amount":"5","currency":"msat","purpose":"pong"}"#)),
                Just(Some(r#"{"amount":0,"currency":""}"#)),
                Just(Some(r#"{"currency":""}"#)),
                Just(Some(r#"{"amount":"0","currency":"","purpose":7}"#)),
                Just(Some("[]")),
            ],
            nostr in prop_oneof![
                Just(None),
                Just(Some("null")),
                Just(Some(r#"["EVENT",{"id":"ab"}]"#)),
                Just(Some("[[[[[[[[1]]]]]]]]")),
                Just(Some("1e400")),
                Just(Some(r#""\ud800""#)),
            ],
            timestamp in prop_oneof![Just(None), Just(Some("1700000000")), Just(Some("-1")), Just(Some(r#""1""#))],
            sender in prop_oneof![Just(None), Just(Some(r#""g.a.b""#)), Just(Some(r#""g.\u0061""#)), Just(Some("3"))],
            ttl in prop_oneof![Just(None), Just(Some("60")), Just(Some("null")), Just(Some(r#""x""#))],
            nonce in prop_oneof![
                Just(None),
                Just(Some(r#""00000000000000ff""#)),
                Just(Some(r#""\u0030\u0031""#)),
                Just(Some("null")),
                Just(Some("255")),
            ],
            extra in any::<bool>(),
        ) {
            let field = |name: &str, value: Option<&str>| value.map(|v| format!(r#""{name}":{v}"#));
            let metadata = [
                field("timestamp", timestamp),
                field("sender", sender),
                field("ttl", ttl),
                field("nonce", nonce),
            ];
            let metadata: Vec<_> = metadata.into_iter().flatten().collect();
            let mut fields: Vec<_> = [
                field("payment", payment),
                field("nostr", nostr),
                Some(format!(r#""metadata":{{{}}}"#, metadata.join(","))),
            ]
            .into_iter()
            .flatten()
            .collect();
            if extra {
                fields.push(r#""extra":{"a":[1,2]}"#.to_string());
            }
            let json = format!("{{{}}}", fields.join(","));
            let mut bytes = vec![1, t];
            bytes.extend_from_slice(&(json.len() as u16).to_be_bytes());
            bytes.extend_from_slice(json.as_bytes());
            let full = Packet::decode(&bytes).map(|p| (p.message_type, p.payload.metadata.nonce));
            let read = decode_nonce(&bytes).map(|(t, n)| (t, n.map(Cow::into_owned)));
            prop_assert_eq!(full.is_ok(), read.is_ok(), "{} / {:?} / {:?}", json, full, read);
            if let (Ok(full), Ok(read)) = (&full, &read) {
                prop_assert_eq!(full, read);
            }
            if let Err(BtpNipsError::MissingNonce(t)) = full {
                prop_assert_eq!(read.unwrap_err(), BtpNipsError::MissingNonce(t));
            }
            for cut in [0, 3, bytes.len() - 1] {
                prop_assert!(decode_nonce(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Packet::decode(&bytes);
            let _ = decode_nonce(&bytes);
        }

        #[test]
        fn decode_arbitrary_payload_never_panics(t in any::<u8>(), payload in any::<String>()) {
            let mut bytes = vec![1, t];
            bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            bytes.extend_from_slice(payload.as_bytes());
            if let Ok(p) = Packet::decode(&bytes) {
                let again = p.encode().unwrap();
                prop_assert_eq!(Packet::decode(&again).unwrap(), p);
            }
        }
    }
}
