//! BTP/2.0 packets (RFC 23), one per binary WebSocket message.
//!
//! Packet: type (`u8`), request id (`u32` big-endian), then the contents as a
//! variable-length octet string. Types: 1 Response, 2 Error, 6 Message, 7 Transfer;
//! 3/4/5 (BTP/1.0 Prepare/Fulfill/Reject) are obsolete and refused.
//!
//! * Response / Message contents: ProtocolData.
//! * Transfer contents: amount (`u64`), ProtocolData.
//! * Error contents: code (3 ASCII bytes), name (var-octets ASCII), triggeredAt
//!   (var-octets GeneralizedTime), data (var-octets, at most 8192 bytes), ProtocolData.
//! * ProtocolData: entry count (var-uint), then per entry: protocol name (var-octets
//!   ASCII), content type (`u8`: 0 octet-stream, 1 text/plain UTF-8, 2 JSON), data
//!   (var-octets).
//!
//! Decoding is strict (canonical lengths, no trailing bytes, ASCII where the ASN.1
//! says IA5String), so a decoded packet re-encodes to the same bytes.

use thiserror::Error;

use super::ilp::{self, shown};
use super::oer::{self, OerError, Reader, Writer};

/// Response.
pub const TYPE_RESPONSE: u8 = 1;
/// Error.
pub const TYPE_ERROR: u8 = 2;
/// Message.
pub const TYPE_MESSAGE: u8 = 6;
/// Transfer.
pub const TYPE_TRANSFER: u8 = 7;

/// Largest `data` of an Error.
pub const MAX_ERROR_DATA_LEN: usize = 8192;

/// Protocol name of ILP packets.
pub const PROTOCOL_ILP: &str = "ilp";
/// Primary protocol name of the auth message.
pub const PROTOCOL_AUTH: &str = "auth";
/// Secondary entry of the auth message carrying the account name.
pub const PROTOCOL_AUTH_USERNAME: &str = "auth_username";
/// Secondary entry of the auth message carrying the token.
pub const PROTOCOL_AUTH_TOKEN: &str = "auth_token";

/// Smallest encoded protocol entry: empty name, content type, empty data.
const MIN_ENTRY_SIZE: usize = 3;

/// A BTP packet that could not be encoded or decoded; messages start with `BTP`
/// and name the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BtpError {
    /// Malformed or truncated OER.
    #[error("{context}: {error}")]
    Oer {
        /// `BTP`, `BTP response`, `BTP error`, `BTP message` or `BTP transfer`.
        context: &'static str,
        /// What the reader found.
        error: OerError,
    },
    /// Types 3, 4 and 5 belong to BTP/1.0.
    #[error("BTP: type: obsolete type {0} (BTP/1.0 Prepare/Fulfill/Reject)")]
    ObsoleteType(u8),
    /// A type BTP/2.0 does not define.
    #[error("BTP: type: unknown type {0}")]
    UnknownType(u8),
    /// A field the ASN.1 declares IA5String holds a non-ASCII byte.
    #[error("{context}: {field}: `{shown}` is not ASCII")]
    NotAscii {
        context: &'static str,
        field: &'static str,
        shown: String,
    },
    /// A triggeredAt that is not a GeneralizedTime.
    #[error("BTP error: triggered_at: invalid GeneralizedTime `{shown}`: {problem}")]
    InvalidTriggeredAt {
        shown: String,
        problem: &'static str,
    },
    /// A field above its size limit (when encoding).
    #[error("{context}: {field}: length {length} exceeds maximum {max}")]
    TooLong {
        context: &'static str,
        field: &'static str,
        length: usize,
        max: usize,
    },
    /// A packet that is not a valid auth message.
    #[error("BTP auth: {0}")]
    Auth(&'static str),
}

const CTX: &str = "BTP";
const CTX_RESPONSE: &str = "BTP response";
const CTX_ERROR: &str = "BTP error";
const CTX_MESSAGE: &str = "BTP message";
const CTX_TRANSFER: &str = "BTP transfer";

fn oer(context: &'static str) -> impl Fn(OerError) -> BtpError {
    move |error| BtpError::Oer { context, error }
}

fn check_ascii(context: &'static str, field: &'static str, bytes: &[u8]) -> Result<(), BtpError> {
    if bytes.is_ascii() {
        Ok(())
    } else {
        Err(BtpError::NotAscii {
            context,
            field,
            shown: shown(bytes),
        })
    }
}

fn ascii_str<'a>(
    context: &'static str,
    field: &'static str,
    bytes: &'a [u8],
) -> Result<&'a str, BtpError> {
    check_ascii(context, field, bytes)?;
    Ok(std::str::from_utf8(bytes).expect("ASCII is UTF-8"))
}

/// Check an ASN.1 GeneralizedTime as BTP uses it: `YYYYMMDDHHMMSS[.f{1,3}]Z`, UTC,
/// seconds up to 60 (leap second). RFC 30 wants trailing zeros of the fraction
/// left out, but the npm `btp-packet` always writes `.mmm`, so both are accepted.
pub fn check_generalized_time(bytes: &[u8]) -> Result<(), BtpError> {
    let err = |problem| BtpError::InvalidTriggeredAt {
        shown: shown(bytes),
        problem,
    };
    ilp::check_date_time(bytes, 60).map_err(err)?;
    match bytes.get(14..) {
        Some(b"Z") => Ok(()),
        Some([b'.', fraction @ .., b'Z'])
            if (1..=3).contains(&fraction.len()) && fraction.iter().all(u8::is_ascii_digit) =>
        {
            Ok(())
        }
        _ => Err(err(
            "expected `Z` or `.` and 1-3 digits then `Z` after the seconds",
        )),
    }
}

/// The `triggered_at` of an Error raised at `at`: `YYYYMMDDHHMMSS.mmmZ`.
pub fn triggered_at(at: &ilp::Timestamp) -> String {
    at.to_generalized_time()
}

/// Content type of a protocol entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// 0, `application/octet-stream`.
    OctetStream,
    /// 1, `text/plain; charset=utf-8`.
    TextUtf8,
    /// 2, `application/json`.
    Json,
    /// Any other value (the ASN.1 allows 0..255); build it with [`ContentType::from_u8`].
    Other(u8),
}

impl ContentType {
    /// The content type of a wire byte.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => ContentType::OctetStream,
            1 => ContentType::TextUtf8,
            2 => ContentType::Json,
            other => ContentType::Other(other),
        }
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        match self {
            ContentType::OctetStream => 0,
            ContentType::TextUtf8 => 1,
            ContentType::Json => 2,
            ContentType::Other(other) => other,
        }
    }
}

/// One entry of a packet's protocol data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolEntry {
    /// Protocol name, ASCII (`ilp`, `auth`, …).
    pub protocol_name: String,
    /// How to display `data`.
    pub content_type: ContentType,
    /// The protocol's bytes.
    pub data: Vec<u8>,
}

impl ProtocolEntry {
    /// An entry.
    pub fn new(protocol_name: impl Into<String>, content_type: ContentType, data: Vec<u8>) -> Self {
        ProtocolEntry {
            protocol_name: protocol_name.into(),
            content_type,
            data,
        }
    }

    /// An `application/octet-stream` entry.
    pub fn octet_stream(protocol_name: impl Into<String>, data: Vec<u8>) -> Self {
        ProtocolEntry::new(protocol_name, ContentType::OctetStream, data)
    }

    /// A `text/plain; charset=utf-8` entry.
    pub fn text(protocol_name: impl Into<String>, text: &str) -> Self {
        ProtocolEntry::new(
            protocol_name,
            ContentType::TextUtf8,
            text.as_bytes().to_vec(),
        )
    }

    /// An `application/json` entry.
    pub fn json(protocol_name: impl Into<String>, json: Vec<u8>) -> Self {
        ProtocolEntry::new(protocol_name, ContentType::Json, json)
    }

    /// The `ilp` entry carrying an encoded ILP packet.
    pub fn ilp(ilp_packet: Vec<u8>) -> Self {
        ProtocolEntry::octet_stream(PROTOCOL_ILP, ilp_packet)
    }

    /// The data as UTF-8 text, whatever the content type says.
    pub fn text_data(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// A packet's protocol data; the first entry says what the packet is.
pub type ProtocolData = Vec<ProtocolEntry>;

/// The first entry named `name`.
pub fn find_entry<'a>(protocol_data: &'a [ProtocolEntry], name: &str) -> Option<&'a ProtocolEntry> {
    protocol_data.iter().find(|e| e.protocol_name == name)
}

fn encode_protocol_data(
    context: &'static str,
    w: &mut Writer,
    protocol_data: &[ProtocolEntry],
) -> Result<(), BtpError> {
    w.write_var_uint(protocol_data.len() as u64);
    for entry in protocol_data {
        let name = entry.protocol_name.as_bytes();
        if !name.is_ascii() {
            return Err(BtpError::NotAscii {
                context,
                field: "protocol_name",
                shown: shown(name),
            });
        }
        w.write_var_octets(name);
        w.write_u8(entry.content_type.as_u8());
        w.write_var_octets(&entry.data);
    }
    Ok(())
}

/// Reads protocol data in place, handing each entry to `on_entry` (name, content type,
/// data) as it is read.
fn read_protocol_data<'a>(
    context: &'static str,
    r: &mut Reader<'a>,
    on_entry: &mut impl FnMut(&'a str, ContentType, &'a [u8]),
) -> Result<(), BtpError> {
    let e = oer(context);
    // The count is checked against the remaining bytes; entries are still read one by
    // one so memory follows what was actually read.
    let count = r
        .read_count("protocol_data count", MIN_ENTRY_SIZE)
        .map_err(&e)?;
    for _ in 0..count {
        let name = r.read_var_octets("protocol_name").map_err(&e)?;
        let protocol_name = ascii_str(context, "protocol_name", name)?;
        let content_type = ContentType::from_u8(r.read_u8("content_type").map_err(&e)?);
        let data = r.read_var_octets("protocol data").map_err(&e)?;
        on_entry(protocol_name, content_type, data);
    }
    Ok(())
}

/// A body's fields other than its protocol data, read in place.
enum Head<'a> {
    Response,
    Message,
    Transfer {
        amount: u64,
    },
    Error {
        code: [u8; 3],
        name: &'a str,
        triggered_at: &'a str,
        data: &'a [u8],
    },
}

/// Reads one packet in place: its request id and body head, each protocol entry handed to
/// `on_entry`. The one reader behind [`Packet::decode`] and [`read_response_ilp`], so both
/// accept exactly the same bytes.
fn read_packet<'a>(
    bytes: &'a [u8],
    mut on_entry: impl FnMut(&'a str, ContentType, &'a [u8]),
) -> Result<(u32, Head<'a>), BtpError> {
    let e = oer(CTX);
    let mut r = Reader::new(bytes);
    let packet_type = r.read_u8("type").map_err(&e)?;
    match packet_type {
        TYPE_RESPONSE | TYPE_ERROR | TYPE_MESSAGE | TYPE_TRANSFER => {}
        3..=5 => return Err(BtpError::ObsoleteType(packet_type)),
        other => return Err(BtpError::UnknownType(other)),
    }
    let request_id = r.read_u32("request_id").map_err(&e)?;
    let contents = r.read_var_octets("contents").map_err(&e)?;
    r.finish("contents").map_err(&e)?;

    let mut r = Reader::new(contents);
    let (context, head) = match packet_type {
        TYPE_RESPONSE => {
            read_protocol_data(CTX_RESPONSE, &mut r, &mut on_entry)?;
            (CTX_RESPONSE, Head::Response)
        }
        TYPE_MESSAGE => {
            read_protocol_data(CTX_MESSAGE, &mut r, &mut on_entry)?;
            (CTX_MESSAGE, Head::Message)
        }
        TYPE_TRANSFER => {
            let amount = r.read_u64("amount").map_err(oer(CTX_TRANSFER))?;
            read_protocol_data(CTX_TRANSFER, &mut r, &mut on_entry)?;
            (CTX_TRANSFER, Head::Transfer { amount })
        }
        _ => {
            let e = oer(CTX_ERROR);
            let code = r.read_array::<3>("code").map_err(&e)?;
            if !code.is_ascii() {
                return Err(BtpError::NotAscii {
                    context: CTX_ERROR,
                    field: "code",
                    shown: shown(&code),
                });
            }
            let name = r.read_var_octets("name").map_err(&e)?;
            let name = ascii_str(CTX_ERROR, "name", name)?;
            let at = r.read_var_octets("triggered_at").map_err(&e)?;
            check_generalized_time(at)?;
            let triggered_at = ascii_str(CTX_ERROR, "triggered_at", at)?;
            let data = r
                .read_var_octets_max("data", MAX_ERROR_DATA_LEN)
                .map_err(&e)?;
            read_protocol_data(CTX_ERROR, &mut r, &mut on_entry)?;
            (
                CTX_ERROR,
                Head::Error {
                    code,
                    name,
                    triggered_at,
                    data,
                },
            )
        }
    };
    r.finish("protocol_data").map_err(oer(context))?;
    Ok((request_id, head))
}

/// The data of the first `ilp` entry of a Response, read in place: `Some` for a Response
/// that has one, `None` for any other packet (an Error, a Response without `ilp`, a
/// request). Accepts exactly what [`Packet::decode`] accepts, failing with its error.
pub fn read_response_ilp(bytes: &[u8]) -> Result<Option<&[u8]>, BtpError> {
    let mut ilp_data = None;
    let (_, head) = read_packet(bytes, |name, _, data| {
        if ilp_data.is_none() && name == PROTOCOL_ILP {
            ilp_data = Some(data);
        }
    })?;
    Ok(match head {
        Head::Response => ilp_data,
        _ => None,
    })
}

/// What a BTP packet carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Type 1: the request succeeded.
    Response(ProtocolData),
    /// Type 2: the request failed.
    Error {
        /// Three ASCII characters (`T00`, `F00`, …).
        code: [u8; 3],
        /// Error name, ASCII (`UnreachableError`, …).
        name: String,
        /// When, as GeneralizedTime (`YYYYMMDDHHMMSS.mmmZ`; see [`triggered_at`]).
        triggered_at: String,
        /// Extra data, at most 8192 bytes.
        data: Vec<u8>,
        /// Protocol data.
        protocol_data: ProtocolData,
    },
    /// Type 6: a request.
    Message(ProtocolData),
    /// Type 7: a settlement request.
    Transfer {
        /// Value added by this settlement.
        amount: u64,
        /// Protocol data (claims, …).
        protocol_data: ProtocolData,
    },
}

impl Body {
    /// The packet type of this body.
    pub fn type_id(&self) -> u8 {
        match self {
            Body::Response(_) => TYPE_RESPONSE,
            Body::Error { .. } => TYPE_ERROR,
            Body::Message(_) => TYPE_MESSAGE,
            Body::Transfer { .. } => TYPE_TRANSFER,
        }
    }

    /// The protocol data, whatever the type.
    pub fn protocol_data(&self) -> &[ProtocolEntry] {
        match self {
            Body::Response(pd) | Body::Message(pd) => pd,
            Body::Error { protocol_data, .. } | Body::Transfer { protocol_data, .. } => {
                protocol_data
            }
        }
    }

    /// Whether this is a response (Response or Error) rather than a request.
    pub fn is_response(&self) -> bool {
        matches!(self, Body::Response(_) | Body::Error { .. })
    }

    fn encode_contents(&self) -> Result<Vec<u8>, BtpError> {
        let mut w = Writer::new();
        match self {
            Body::Response(pd) => encode_protocol_data(CTX_RESPONSE, &mut w, pd)?,
            Body::Message(pd) => encode_protocol_data(CTX_MESSAGE, &mut w, pd)?,
            Body::Transfer {
                amount,
                protocol_data,
            } => {
                w.write_u64(*amount);
                encode_protocol_data(CTX_TRANSFER, &mut w, protocol_data)?;
            }
            Body::Error {
                code,
                name,
                triggered_at,
                data,
                protocol_data,
            } => {
                if !code.is_ascii() {
                    return Err(BtpError::NotAscii {
                        context: CTX_ERROR,
                        field: "code",
                        shown: shown(code),
                    });
                }
                if !name.is_ascii() {
                    return Err(BtpError::NotAscii {
                        context: CTX_ERROR,
                        field: "name",
                        shown: shown(name.as_bytes()),
                    });
                }
                check_generalized_time(triggered_at.as_bytes())?;
                if data.len() > MAX_ERROR_DATA_LEN {
                    return Err(BtpError::TooLong {
                        context: CTX_ERROR,
                        field: "data",
                        length: data.len(),
                        max: MAX_ERROR_DATA_LEN,
                    });
                }
                w.write_bytes(code);
                w.write_var_octets(name.as_bytes());
                w.write_var_octets(triggered_at.as_bytes());
                w.write_var_octets(data);
                encode_protocol_data(CTX_ERROR, &mut w, protocol_data)?;
            }
        }
        Ok(w.into_inner())
    }
}

/// A BTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Correlates a response with its request.
    pub request_id: u32,
    /// Type and contents.
    pub body: Body,
}

impl Packet {
    /// A Message.
    pub fn message(request_id: u32, protocol_data: ProtocolData) -> Self {
        Packet {
            request_id,
            body: Body::Message(protocol_data),
        }
    }

    /// A Response.
    pub fn response(request_id: u32, protocol_data: ProtocolData) -> Self {
        Packet {
            request_id,
            body: Body::Response(protocol_data),
        }
    }

    /// A Transfer.
    pub fn transfer(request_id: u32, amount: u64, protocol_data: ProtocolData) -> Self {
        Packet {
            request_id,
            body: Body::Transfer {
                amount,
                protocol_data,
            },
        }
    }

    /// An Error with no data nor protocol data, triggered at `at`.
    pub fn error(request_id: u32, code: [u8; 3], name: &str, at: &ilp::Timestamp) -> Self {
        Packet {
            request_id,
            body: Body::Error {
                code,
                name: name.to_owned(),
                triggered_at: triggered_at(at),
                data: Vec::new(),
                protocol_data: Vec::new(),
            },
        }
    }

    /// The client's auth Message: `auth` (octet-stream, empty) first, then
    /// `auth_username` and `auth_token` (text/plain UTF-8), as `ilp-plugin-btp`
    /// sends it.
    pub fn auth(request_id: u32, username: &str, token: &str) -> Self {
        Packet::message(
            request_id,
            vec![
                ProtocolEntry::octet_stream(PROTOCOL_AUTH, Vec::new()),
                ProtocolEntry::text(PROTOCOL_AUTH_USERNAME, username),
                ProtocolEntry::text(PROTOCOL_AUTH_TOKEN, token),
            ],
        )
    }

    /// A Message carrying an encoded ILP packet (a Prepare) as its `ilp` entry.
    pub fn ilp_message(request_id: u32, ilp_packet: Vec<u8>) -> Self {
        Packet::message(request_id, vec![ProtocolEntry::ilp(ilp_packet)])
    }

    /// A Response carrying an encoded ILP packet (Fulfill or Reject) as its `ilp` entry.
    pub fn ilp_response(request_id: u32, ilp_packet: Vec<u8>) -> Self {
        Packet::response(request_id, vec![ProtocolEntry::ilp(ilp_packet)])
    }

    /// The first protocol entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&ProtocolEntry> {
        find_entry(self.body.protocol_data(), name)
    }

    /// The name of the primary (first) protocol entry.
    pub fn primary_protocol(&self) -> Option<&str> {
        self.body
            .protocol_data()
            .first()
            .map(|e| e.protocol_name.as_str())
    }

    /// The bytes of the `ilp` entry, if any.
    pub fn ilp_data(&self) -> Option<&[u8]> {
        self.entry(PROTOCOL_ILP).map(|e| e.data.as_slice())
    }

    /// Decode the `ilp` entry: `Ok(None)` if there is none.
    pub fn decode_ilp(&self) -> Result<Option<ilp::Packet>, ilp::IlpError> {
        self.ilp_data().map(ilp::Packet::decode).transpose()
    }

    /// Encode. Fails on non-ASCII names or codes, an invalid `triggered_at`, or Error
    /// data over 8192 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, BtpError> {
        let contents = self.body.encode_contents()?;
        let mut w = Writer::with_capacity(1 + 4 + oer::var_octets_size(contents.len()));
        w.write_u8(self.body.type_id());
        w.write_u32(self.request_id);
        w.write_var_octets(&contents);
        Ok(w.into_inner())
    }

    /// Decode one packet (one WebSocket message).
    pub fn decode(bytes: &[u8]) -> Result<Self, BtpError> {
        let mut entries = Vec::new();
        let (request_id, head) = read_packet(bytes, |name, content_type, data| {
            entries.push(ProtocolEntry {
                protocol_name: name.to_owned(),
                content_type,
                data: data.to_vec(),
            })
        })?;
        let body = match head {
            Head::Response => Body::Response(entries),
            Head::Message => Body::Message(entries),
            Head::Transfer { amount } => Body::Transfer {
                amount,
                protocol_data: entries,
            },
            Head::Error {
                code,
                name,
                triggered_at,
                data,
            } => Body::Error {
                code,
                name: name.to_owned(),
                triggered_at: triggered_at.to_owned(),
                data: data.to_vec(),
                protocol_data: entries,
            },
        };
        Ok(Packet { request_id, body })
    }
}

/// What a client's auth Message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCredentials {
    /// `auth_username`, if sent (RFC 23 only requires the token).
    pub username: Option<String>,
    /// `auth_token` (may be empty when no authentication is needed).
    pub token: String,
}

/// Read the credentials of a client's first packet: a Message whose primary entry is
/// `auth`, with a UTF-8 `auth_token` entry and optionally `auth_username`.
pub fn parse_auth(packet: &Packet) -> Result<AuthCredentials, BtpError> {
    let Body::Message(pd) = &packet.body else {
        return Err(BtpError::Auth("not a Message"));
    };
    if pd.first().map(|e| e.protocol_name.as_str()) != Some(PROTOCOL_AUTH) {
        return Err(BtpError::Auth("primary protocol is not `auth`"));
    }
    let token = find_entry(pd, PROTOCOL_AUTH_TOKEN)
        .ok_or(BtpError::Auth("auth_token: missing"))?
        .text_data()
        .ok_or(BtpError::Auth("auth_token: not UTF-8"))?
        .to_owned();
    let username = match find_entry(pd, PROTOCOL_AUTH_USERNAME) {
        None => None,
        Some(e) => Some(
            e.text_data()
                .ok_or(BtpError::Auth("auth_username: not UTF-8"))?
                .to_owned(),
        ),
    };
    Ok(AuthCredentials { username, token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The protocol data of the npm `btp-packet` test suite.
    fn npm_protocol_data() -> ProtocolData {
        vec![
            ProtocolEntry::octet_stream("ilp", vec![]),
            ProtocolEntry::octet_stream("foo", b"bar".to_vec()),
            ProtocolEntry::text("beep", "boop"),
            ProtocolEntry::json("json", b"{}".to_vec()),
        ]
    }

    const NPM_PROTOCOL_DATA: [u8; 37] = [
        1, 4, 3, 105, 108, 112, 0, 0, 3, 102, 111, 111, 0, 3, 98, 97, 114, 4, 98, 101, 101, 112, 1,
        4, 98, 111, 111, 112, 4, 106, 115, 111, 110, 2, 2, 123, 125,
    ];

    fn with_header(packet_type: u8, contents: &[u8]) -> Vec<u8> {
        let mut v = vec![packet_type, 0, 0, 0, 1, contents.len() as u8];
        v.extend_from_slice(contents);
        v
    }

    /// The four packets of the npm `btp-packet` tests, with their exact bytes.
    fn npm_fixtures() -> Vec<(Packet, Vec<u8>)> {
        let mut error_contents = b"L13".to_vec();
        error_contents.push(9);
        error_contents.extend_from_slice(b"errorName");
        error_contents.push(19);
        error_contents.extend_from_slice(b"20170828183200.000Z");
        error_contents.push(3);
        error_contents.extend_from_slice(b"boo");
        error_contents.extend_from_slice(&NPM_PROTOCOL_DATA);
        let mut transfer_contents = vec![0, 0, 0, 0, 0, 0, 0, 100];
        transfer_contents.extend_from_slice(&NPM_PROTOCOL_DATA);
        vec![
            (
                Packet::response(1, npm_protocol_data()),
                with_header(1, &NPM_PROTOCOL_DATA),
            ),
            (
                Packet {
                    request_id: 1,
                    body: Body::Error {
                        code: *b"L13",
                        name: "errorName".into(),
                        triggered_at: "20170828183200.000Z".into(),
                        data: b"boo".to_vec(),
                        protocol_data: npm_protocol_data(),
                    },
                },
                with_header(2, &error_contents),
            ),
            (
                Packet::message(1, npm_protocol_data()),
                with_header(6, &NPM_PROTOCOL_DATA),
            ),
            (
                Packet::transfer(1, 100, npm_protocol_data()),
                with_header(7, &transfer_contents),
            ),
        ]
    }

    #[test]
    fn npm_fixtures_exact_bytes() {
        // The npm suite's literal arrays, for the Message and the Error.
        let message: Vec<u8> = vec![
            6, 0, 0, 0, 1, 37, 1, 4, 3, 105, 108, 112, 0, 0, 3, 102, 111, 111, 0, 3, 98, 97, 114,
            4, 98, 101, 101, 112, 1, 4, 98, 111, 111, 112, 4, 106, 115, 111, 110, 2, 2, 123, 125,
        ];
        let error: Vec<u8> = vec![
            2, 0, 0, 0, 1, 74, 76, 49, 51, 9, 101, 114, 114, 111, 114, 78, 97, 109, 101, 19, 50,
            48, 49, 55, 48, 56, 50, 56, 49, 56, 51, 50, 48, 48, 46, 48, 48, 48, 90, 3, 98, 111,
            111, 1, 4, 3, 105, 108, 112, 0, 0, 3, 102, 111, 111, 0, 3, 98, 97, 114, 4, 98, 101,
            101, 112, 1, 4, 98, 111, 111, 112, 4, 106, 115, 111, 110, 2, 2, 123, 125,
        ];
        let fixtures = npm_fixtures();
        assert_eq!(fixtures[2].1, message);
        assert_eq!(fixtures[1].1, error);
        for (packet, bytes) in fixtures {
            assert_eq!(packet.encode().unwrap(), bytes, "{packet:?}");
            assert_eq!(Packet::decode(&bytes).unwrap(), packet);
        }
    }

    #[test]
    fn auth_message_bytes() {
        let packet = Packet::auth(0x0102_0304, "alice", "s3cret");
        let mut expected = vec![6, 1, 2, 3, 4];
        let mut contents = vec![1, 3];
        contents.extend_from_slice(&[4, b'a', b'u', b't', b'h', 0, 0]);
        contents.push(13);
        contents.extend_from_slice(b"auth_username");
        contents.extend_from_slice(&[1, 5]);
        contents.extend_from_slice(b"alice");
        contents.push(10);
        contents.extend_from_slice(b"auth_token");
        contents.extend_from_slice(&[1, 6]);
        contents.extend_from_slice(b"s3cret");
        expected.push(contents.len() as u8);
        expected.extend_from_slice(&contents);
        assert_eq!(packet.encode().unwrap(), expected);
        let decoded = Packet::decode(&expected).unwrap();
        assert_eq!(decoded.primary_protocol(), Some("auth"));
        assert_eq!(
            parse_auth(&decoded).unwrap(),
            AuthCredentials {
                username: Some("alice".into()),
                token: "s3cret".into()
            }
        );
    }

    #[test]
    fn parse_auth_rules() {
        let no_token = Packet::message(1, vec![ProtocolEntry::octet_stream("auth", vec![])]);
        assert_eq!(
            parse_auth(&no_token).unwrap_err().to_string(),
            "BTP auth: auth_token: missing"
        );
        let token_only = Packet::message(
            1,
            vec![
                ProtocolEntry::octet_stream("auth", vec![]),
                ProtocolEntry::text("auth_token", ""),
            ],
        );
        assert_eq!(
            parse_auth(&token_only).unwrap(),
            AuthCredentials {
                username: None,
                token: String::new()
            }
        );
        let wrong_first = Packet::ilp_message(1, vec![]);
        assert!(parse_auth(&wrong_first).is_err());
        let response = Packet::response(1, vec![ProtocolEntry::octet_stream("auth", vec![])]);
        assert_eq!(
            parse_auth(&response).unwrap_err(),
            BtpError::Auth("not a Message")
        );
    }

    #[test]
    fn ilp_entry_round_trip() {
        let prepare = ilp::Prepare::peer_control(
            ilp::Address::new("peer.btp-nips").unwrap(),
            "20250101000000000".parse().unwrap(),
            b"hello".to_vec(),
        );
        let packet = Packet::ilp_message(7, prepare.encode().unwrap());
        let bytes = packet.encode().unwrap();
        let decoded = Packet::decode(&bytes).unwrap();
        assert_eq!(decoded.primary_protocol(), Some("ilp"));
        assert_eq!(
            decoded.decode_ilp().unwrap(),
            Some(ilp::Packet::Prepare(prepare))
        );
        assert_eq!(Packet::auth(1, "", "").decode_ilp().unwrap(), None);
    }

    #[test]
    fn obsolete_and_unknown_types() {
        for t in 3..=5 {
            let err = Packet::decode(&[t, 0, 0, 0, 1, 0]).unwrap_err();
            assert_eq!(err, BtpError::ObsoleteType(t));
            assert!(err.to_string().contains("obsolete type"));
        }
        for t in [0, 8, 255] {
            assert_eq!(
                Packet::decode(&[t, 0, 0, 0, 1, 0]).unwrap_err(),
                BtpError::UnknownType(t)
            );
        }
    }

    #[test]
    fn field_errors_are_named() {
        assert_eq!(
            Packet::decode(&[6, 0, 0, 0, 1, 0x83, 0x01, 0x11, 0x70, 1, 2])
                .unwrap_err()
                .to_string(),
            "BTP: contents: length 70000 exceeds remaining 2 bytes"
        );
        assert_eq!(
            Packet::decode(&[6, 0, 0]).unwrap_err().to_string(),
            "BTP: request_id: unexpected end of input: needs 4 bytes, 2 remaining"
        );
        // Message with one entry whose name is not ASCII.
        assert_eq!(
            Packet::decode(&[6, 0, 0, 0, 1, 6, 1, 1, 1, 0xe9, 0, 0])
                .unwrap_err()
                .to_string(),
            "BTP message: protocol_name: `\u{FFFD}` is not ASCII"
        );
        // Message claiming 2^32-1 entries in 3 bytes.
        assert_eq!(
            Packet::decode(&[6, 0, 0, 0, 1, 5, 4, 0xff, 0xff, 0xff, 0xff])
                .unwrap_err()
                .to_string(),
            "BTP message: protocol_data count: count 4294967295 exceeds what the remaining 0 bytes can hold"
        );
        // Error whose triggered_at is garbage.
        let mut contents = b"F00".to_vec();
        contents.extend_from_slice(&[1, b'x', 3]);
        contents.extend_from_slice(b"now");
        contents.extend_from_slice(&[0, 1, 0]);
        let err = Packet::decode(&with_header(2, &contents)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BTP error: triggered_at: invalid GeneralizedTime `now`: year is not 4 digits"
        );
        // Error data above 8192 bytes.
        let mut contents = b"F00".to_vec();
        contents.extend_from_slice(&[1, b'x', 15]);
        contents.extend_from_slice(b"20171224161432Z");
        contents.extend_from_slice(&[0x82, 0x20, 0x01]);
        assert_eq!(
            Packet::decode(&with_header(2, &contents))
                .unwrap_err()
                .to_string(),
            "BTP error: data: length 8193 exceeds maximum 8192"
        );
        // Trailing bytes after the protocol data.
        let mut contents = NPM_PROTOCOL_DATA.to_vec();
        contents.push(9);
        assert_eq!(
            Packet::decode(&with_header(6, &contents))
                .unwrap_err()
                .to_string(),
            "BTP message: 1 trailing bytes after protocol_data"
        );
    }

    #[test]
    fn generalized_times() {
        for good in [
            "20171224161432.279Z",
            "20171224161432.27Z",
            "20171224161432.2Z",
            "20171224161432Z",
            "20161231235960.852Z",
            "20171225000000Z",
            "99991224161432.279Z",
            "20170828183200.000Z",
        ] {
            assert!(check_generalized_time(good.as_bytes()).is_ok(), "{good}");
        }
        for bad in [
            "20171224235312.431+0200",
            "20171224215312.4318Z",
            "20171224161432,279Z",
            "20171324161432.279Z",
            "20171224230000.Z",
            "20171224240000Z",
            "2017122421531Z",
            "201712242153Z",
            "2017122421Z",
            "20171224161432",
            "",
        ] {
            assert!(check_generalized_time(bad.as_bytes()).is_err(), "{bad}");
        }
        let at: ilp::Timestamp = "20170828183200000".parse().unwrap();
        assert_eq!(triggered_at(&at), "20170828183200.000Z");
        let packet = Packet::error(9, *b"F00", "NotAcceptedError", &at);
        assert_eq!(Packet::decode(&packet.encode().unwrap()).unwrap(), packet);
    }

    #[test]
    fn encode_refuses_invalid_fields() {
        let at: ilp::Timestamp = "20170828183200000".parse().unwrap();
        let mut packet = Packet::error(1, *b"F00", "NotAcceptedError", &at);
        if let Body::Error { data, .. } = &mut packet.body {
            *data = vec![0; MAX_ERROR_DATA_LEN + 1];
        }
        assert_eq!(
            packet.encode().unwrap_err().to_string(),
            "BTP error: data: length 8193 exceeds maximum 8192"
        );
        let packet = Packet::message(1, vec![ProtocolEntry::octet_stream("ïlp", vec![])]);
        assert!(matches!(
            packet.encode(),
            Err(BtpError::NotAscii {
                field: "protocol_name",
                ..
            })
        ));
    }

    #[test]
    fn large_packets_use_long_lengths() {
        let packet = Packet::message(
            u32::MAX,
            vec![ProtocolEntry::octet_stream("ilp", vec![0xab; 70_000])],
        );
        let bytes = packet.encode().unwrap();
        assert_eq!(&bytes[..6], &[6, 0xff, 0xff, 0xff, 0xff, 0x83]);
        assert_eq!(Packet::decode(&bytes).unwrap(), packet);
    }

    #[test]
    fn truncated_at_every_offset_and_extended() {
        let mut all = npm_fixtures();
        all.push((
            Packet::auth(5, "u", "t"),
            Packet::auth(5, "u", "t").encode().unwrap(),
        ));
        for (_, bytes) in all {
            for cut in 0..bytes.len() {
                assert!(Packet::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                Packet::decode(&longer).unwrap_err().to_string(),
                "BTP: 1 trailing bytes after contents"
            );
        }
    }

    fn ascii_string(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(0u8..128, 0..max).prop_map(|b| String::from_utf8(b).unwrap())
    }

    fn protocol_data_strategy() -> impl Strategy<Value = ProtocolData> {
        let entry = (
            ascii_string(20),
            any::<u8>(),
            prop_oneof![
                4 => prop::collection::vec(any::<u8>(), 0..100),
                1 => prop::collection::vec(any::<u8>(), 100..1000),
            ],
        )
            .prop_map(|(name, ct, data)| ProtocolEntry::new(name, ContentType::from_u8(ct), data));
        prop::collection::vec(entry, 0..5)
    }

    fn generalized_time_strategy() -> impl Strategy<Value = String> {
        (super::super::ilp::tests::timestamp_strategy(), 0usize..5).prop_map(|(t, form)| {
            let s = t.as_str();
            match form {
                0 => format!("{}Z", &s[..14]),
                1 => format!("{}.{}Z", &s[..14], &s[14..15]),
                2 => format!("{}.{}Z", &s[..14], &s[14..16]),
                _ => t.to_generalized_time(),
            }
        })
    }

    fn packet_strategy() -> impl Strategy<Value = Packet> {
        let body = prop_oneof![
            protocol_data_strategy().prop_map(Body::Response),
            protocol_data_strategy().prop_map(Body::Message),
            (any::<u64>(), protocol_data_strategy()).prop_map(|(amount, protocol_data)| {
                Body::Transfer {
                    amount,
                    protocol_data,
                }
            }),
            (
                prop::array::uniform3(0u8..128),
                ascii_string(40),
                generalized_time_strategy(),
                prop::collection::vec(any::<u8>(), 0..=MAX_ERROR_DATA_LEN),
                protocol_data_strategy(),
            )
                .prop_map(|(code, name, triggered_at, data, protocol_data)| {
                    Body::Error {
                        code,
                        name,
                        triggered_at,
                        data,
                        protocol_data,
                    }
                }),
        ];
        (any::<u32>(), body).prop_map(|(request_id, body)| Packet { request_id, body })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip(packet in packet_strategy()) {
            let bytes = packet.encode().unwrap();
            prop_assert_eq!(Packet::decode(&bytes).unwrap(), packet);
            for cut in [0, 1, 5, bytes.len() / 2, bytes.len() - 1] {
                prop_assert!(Packet::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(p) = Packet::decode(&bytes) {
                prop_assert_eq!(p.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn decode_arbitrary_contents_never_panics(
            t in prop::sample::select(vec![1u8, 2, 6, 7]),
            contents in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut w = Writer::new();
            w.write_u8(t);
            w.write_u32(1);
            w.write_var_octets(&contents);
            let bytes = w.into_inner();
            if let Ok(p) = Packet::decode(&bytes) {
                prop_assert_eq!(p.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn the_response_reader_agrees_with_decode(
            packet in packet_strategy(),
            ilp_first in any::<bool>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            mutate in any::<bool>(),
        ) {
            let mut packet = packet;
            if ilp_first {
                if let Body::Response(pd) = &mut packet.body {
                    pd.insert(0, ProtocolEntry::ilp(vec![byte; 3]));
                }
            }
            let mut bytes = packet.encode().unwrap();
            if mutate {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            match (Packet::decode(&bytes), read_response_ilp(&bytes)) {
                (Ok(decoded), Ok(read)) => {
                    let expected = match decoded.body {
                        Body::Response(_) => decoded.ilp_data(),
                        _ => None,
                    };
                    prop_assert_eq!(read, expected);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "decode {:?}, reader {:?}", a, b),
            }
        }

        #[test]
        fn decode_mutated_packets(packet in packet_strategy(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = packet.encode().unwrap();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(p) = Packet::decode(&bytes) {
                prop_assert_eq!(p.encode().unwrap(), bytes);
            }
        }
    }
}
