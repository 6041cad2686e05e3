//! ILPv4 packets (RFC 27), OER-encoded (RFC 30).
//!
//! Envelope: type (`u8`: 12 Prepare, 13 Fulfill, 14 Reject), then the contents as a
//! variable-length octet string.
//!
//! * Prepare: amount (`u64`), expiresAt (17 ASCII digits `YYYYMMDDHHMMSSmmm`, UTC),
//!   executionCondition (32 bytes), destination (var-octets address), data
//!   (var-octets, at most 32767 bytes).
//! * Fulfill: fulfillment (32 bytes), data.
//! * Reject: code (3 ASCII bytes), triggeredBy (var-octets address, may be empty),
//!   message (var-octets, UTF-8 by convention, kept as bytes), data.
//!
//! Decoding is strict: no trailing bytes after the envelope or inside the contents,
//! canonical lengths only, valid addresses and timestamps. So a packet that decodes
//! re-encodes to the very same bytes.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::oer::{self, OerError, Reader, Writer};

/// Envelope type of an ILP Prepare.
pub const TYPE_PREPARE: u8 = 12;
/// Envelope type of an ILP Fulfill.
pub const TYPE_FULFILL: u8 = 13;
/// Envelope type of an ILP Reject.
pub const TYPE_REJECT: u8 = 14;

/// Largest `data` field of any ILP packet.
pub const MAX_DATA_LEN: usize = 32_767;
/// Longest ILP address (RFC 15).
pub const MAX_ADDRESS_LEN: usize = 1023;
/// Length of the ILP fixed-length timestamp.
pub const TIMESTAMP_LEN: usize = 17;

/// Condition of zero-amount bilateral control messages (ILDCP, RFC 31, and the
/// node's `peer.btp-nips`): SHA-256 of 32 zero bytes
/// (`Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU=`).
pub const PEER_PROTOCOL_CONDITION: [u8; 32] = [
    0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1, 0x8b, 0x8e, 0x9f, 0x8e, 0x20,
    0x08, 0x97, 0x14, 0x85, 0x6e, 0xe2, 0x33, 0xb3, 0x90, 0x2a, 0x59, 0x1d, 0x0d, 0x5f, 0x29, 0x25,
];
/// Fulfillment of zero-amount bilateral control messages: 32 zero bytes.
pub const PEER_PROTOCOL_FULFILLMENT: [u8; 32] = [0; 32];

/// Common ILP error codes (RFC 27).
pub mod codes {
    /// Generic sender error.
    pub const F00_BAD_REQUEST: [u8; 3] = *b"F00";
    /// The packet was syntactically invalid.
    pub const F01_INVALID_PACKET: [u8; 3] = *b"F01";
    /// No route to the destination.
    pub const F02_UNREACHABLE: [u8; 3] = *b"F02";
    /// The receiver cannot fulfill this condition.
    pub const F05_WRONG_CONDITION: [u8; 3] = *b"F05";
    /// The receiver did not expect this payment.
    pub const F06_UNEXPECTED_PAYMENT: [u8; 3] = *b"F06";
    /// The amount is above what the connector forwards.
    pub const F08_AMOUNT_TOO_LARGE: [u8; 3] = *b"F08";
    /// Final application error.
    pub const F99_APPLICATION_ERROR: [u8; 3] = *b"F99";
    /// Generic unexpected error.
    pub const T00_INTERNAL_ERROR: [u8; 3] = *b"T00";
    /// The next hop could not be reached.
    pub const T01_PEER_UNREACHABLE: [u8; 3] = *b"T01";
    /// The connector is overloaded.
    pub const T03_CONNECTOR_BUSY: [u8; 3] = *b"T03";
    /// Not enough balance or bandwidth right now.
    pub const T04_INSUFFICIENT_LIQUIDITY: [u8; 3] = *b"T04";
    /// The sender is rate limited.
    pub const T05_RATE_LIMITED: [u8; 3] = *b"T05";
    /// Temporary application error.
    pub const T99_APPLICATION_ERROR: [u8; 3] = *b"T99";
    /// The next party did not answer before the expiry.
    pub const R00_TRANSFER_TIMED_OUT: [u8; 3] = *b"R00";
    /// Not enough time left to forward.
    pub const R02_INSUFFICIENT_TIMEOUT: [u8; 3] = *b"R02";
}

/// Show at most 64 bytes of untrusted input in an error message, escaped.
pub(crate) fn shown(bytes: &[u8]) -> String {
    crate::untrusted::shown_bytes(bytes, 64)
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

/// Allocation schemes of RFC 15.
const SCHEMES: [&str; 10] = [
    "g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local",
];

/// Why an ILP address is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AddressProblem {
    /// Zero bytes.
    #[error("empty")]
    Empty,
    /// More than 1023 bytes.
    #[error("{0} bytes exceeds 1023")]
    TooLong(usize),
    /// The first segment is not an allocation scheme.
    #[error("unknown allocation scheme")]
    UnknownScheme,
    /// Nothing after the allocation scheme.
    #[error("no segment after the allocation scheme")]
    NoSegment,
    /// Two periods in a row, or a trailing period.
    #[error("empty segment")]
    EmptySegment,
    /// A byte outside `[A-Za-z0-9_~-]` in a segment.
    #[error("invalid byte 0x{0:02x}")]
    InvalidByte(u8),
}

/// An invalid ILP address; shows (a prefix of) the offending text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid address `{shown}`: {problem}")]
pub struct AddressError {
    /// The address as given, escaped and cut to 64 characters.
    pub shown: String,
    /// What is wrong with it.
    pub problem: AddressProblem,
}

fn check_address(bytes: &[u8]) -> Result<(), AddressProblem> {
    if bytes.is_empty() {
        return Err(AddressProblem::Empty);
    }
    if bytes.len() > MAX_ADDRESS_LEN {
        return Err(AddressProblem::TooLong(bytes.len()));
    }
    let mut segments = bytes.split(|&b| b == b'.');
    let scheme = segments.next().unwrap_or_default();
    if !SCHEMES.iter().any(|s| s.as_bytes() == scheme) {
        return Err(AddressProblem::UnknownScheme);
    }
    let mut count = 0usize;
    for segment in segments {
        count += 1;
        if segment.is_empty() {
            return Err(AddressProblem::EmptySegment);
        }
        if let Some(&bad) = segment
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'-')))
        {
            return Err(AddressProblem::InvalidByte(bad));
        }
    }
    if count == 0 {
        return Err(AddressProblem::NoSegment);
    }
    Ok(())
}

/// A valid ILP address: `(g|private|example|peer|self|test[1-3]?|local)(\.[a-zA-Z0-9_~-]+)+`,
/// at most 1023 bytes (RFC 15). Always ASCII.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

impl Address {
    /// Validate and wrap an address.
    pub fn new(address: impl Into<String>) -> Result<Self, AddressError> {
        let address = address.into();
        match check_address(address.as_bytes()) {
            Ok(()) => Ok(Address(address)),
            Err(problem) => Err(AddressError {
                shown: shown(address.as_bytes()),
                problem,
            }),
        }
    }

    /// Validate an address given as bytes (as read off the wire).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AddressError> {
        let err = |problem| AddressError {
            shown: shown(bytes),
            problem,
        };
        check_address(bytes).map_err(err)?;
        // Checked: every byte is ASCII.
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Address(s.to_owned())),
            Err(_) => Err(err(AddressProblem::InvalidByte(0x80))),
        }
    }

    /// Wrap bytes that passed `check_address` (ASCII, so the conversion is lossless).
    fn from_checked(bytes: &[u8]) -> Self {
        Address(String::from_utf8_lossy(bytes).into_owned())
    }

    /// The address text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The allocation scheme (`g`, `peer`, …).
    pub fn scheme(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }

    /// The segments after the allocation scheme.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.').skip(1)
    }

    /// Whether this is a `peer.` address (bilateral, never forwarded).
    pub fn is_peer(&self) -> bool {
        self.scheme() == "peer"
    }

    /// Whether `self` equals `prefix` or lies under it (`g.a` is under `g`, not `g.ab`
    /// under `g.a`).
    pub fn starts_with(&self, prefix: &Address) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'.'))
    }

    /// A child address: `self.segment`.
    pub fn with_suffix(&self, segment: &str) -> Result<Address, AddressError> {
        Address::new(format!("{}.{}", self.0, segment))
    }

    /// Unwrap into the address text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({:?})", self.0)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::new(s)
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Address::new(s)
    }
}

impl TryFrom<&str> for Address {
    type Error = AddressError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Address::new(s)
    }
}

// ---------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------

/// An invalid timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid timestamp `{shown}`: {problem}")]
pub struct TimestampError {
    /// The timestamp as given, escaped and cut to 64 characters.
    pub shown: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

pub(crate) fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

pub(crate) fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Parse `N` ASCII digits.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Check the `YYYYMMDDHHMMSS` part of an ILP or generalized time. `max_second` is 59
/// for ILP timestamps (leap seconds are smeared, RFC 30) and 60 for GeneralizedTime.
pub(crate) fn check_date_time(bytes: &[u8], max_second: u32) -> Result<(), &'static str> {
    let field = |range: std::ops::Range<usize>, what: &'static str| {
        bytes.get(range).and_then(digits).ok_or(what)
    };
    let year = field(0..4, "year is not 4 digits")?;
    let month = field(4..6, "month is not 2 digits")?;
    let day = field(6..8, "day is not 2 digits")?;
    let hour = field(8..10, "hour is not 2 digits")?;
    let minute = field(10..12, "minute is not 2 digits")?;
    let second = field(12..14, "second is not 2 digits")?;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 {
        return Err("hour out of range");
    }
    if minute > 59 {
        return Err("minute out of range");
    }
    if second > max_second {
        return Err("second out of range");
    }
    Ok(())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the Unix epoch of 0000-01-01T00:00:00.000Z.
const MIN_UNIX_MILLIS: i64 = -62_167_219_200_000;
/// Milliseconds since the Unix epoch of 9999-12-31T23:59:59.999Z.
const MAX_UNIX_MILLIS: i64 = 253_402_300_799_999;

/// The ILP fixed-length timestamp: 17 ASCII digits `YYYYMMDDHHMMSSmmm`, UTC, always
/// a valid calendar date (seconds 00–59: RFC 30 smears leap seconds). Orders
/// chronologically.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp([u8; TIMESTAMP_LEN]);

impl Timestamp {
    /// Validate 17 bytes read off the wire.
    pub fn parse(bytes: &[u8]) -> Result<Self, TimestampError> {
        let err = |problem| TimestampError {
            shown: shown(bytes),
            problem,
        };
        let array: [u8; TIMESTAMP_LEN] = bytes.try_into().map_err(|_| err("not 17 characters"))?;
        check_date_time(&array, 59).map_err(err)?;
        if digits(&array[14..]).is_none() {
            return Err(err("milliseconds are not 3 digits"));
        }
        Ok(Timestamp(array))
    }

    /// A timestamp from milliseconds since the Unix epoch; `None` outside years
    /// 0000–9999.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        if !(MIN_UNIX_MILLIS..=MAX_UNIX_MILLIS).contains(&millis) {
            return None;
        }
        let days = millis.div_euclid(86_400_000);
        let in_day = millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        // Written digit by digit: a heartbeat's expiry is made on every PING.
        let mut text = [b'0'; TIMESTAMP_LEN];
        let fields = [
            (year as u64, 4),
            (u64::from(month), 2),
            (u64::from(day), 2),
            ((in_day / 3_600_000) as u64, 2),
            ((in_day / 60_000 % 60) as u64, 2),
            ((in_day / 1000 % 60) as u64, 2),
            ((in_day % 1000) as u64, 3),
        ];
        let mut at = 0;
        for (mut value, width) in fields {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
            at += width;
        }
        debug_assert!(Timestamp::parse(&text).is_ok());
        Some(Timestamp(text))
    }

    /// Milliseconds since the Unix epoch (negative before 1970).
    pub fn to_unix_millis(&self) -> i64 {
        let d = |range: std::ops::Range<usize>| i64::from(digits(&self.0[range]).unwrap_or(0));
        let days = days_from_civil(d(0..4), d(4..6) as u32, d(6..8) as u32);
        days * 86_400_000 + d(8..10) * 3_600_000 + d(10..12) * 60_000 + d(12..14) * 1000 + d(14..17)
    }

    /// A timestamp from a system time, truncated to the millisecond; `None` outside
    /// years 0000–9999.
    pub fn from_system_time(time: SystemTime) -> Option<Self> {
        let millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).ok()?,
            Err(before) => {
                let d = before.duration();
                // Round towards the past so sub-millisecond parts don't move us forward.
                let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
                -i64::try_from(ms).ok()?
            }
        };
        Timestamp::from_unix_millis(millis)
    }

    /// The system time of this timestamp; `None` if the platform's clock cannot
    /// represent it.
    pub fn to_system_time(&self) -> Option<SystemTime> {
        let millis = self.to_unix_millis();
        let magnitude = Duration::from_millis(millis.unsigned_abs());
        if millis >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// The current time, clamped to years 0000–9999.
    pub fn now() -> Self {
        let now = SystemTime::now();
        Timestamp::from_system_time(now).unwrap_or_else(|| {
            let limit = if now >= UNIX_EPOCH {
                MAX_UNIX_MILLIS
            } else {
                MIN_UNIX_MILLIS
            };
            Timestamp::from_unix_millis(limit).unwrap_or(Timestamp(*b"00000101000000000"))
        })
    }

    /// This timestamp moved `millis` later; `None` past year 9999.
    pub fn checked_add_millis(&self, millis: u64) -> Option<Self> {
        let millis = i64::try_from(millis).ok()?;
        Timestamp::from_unix_millis(self.to_unix_millis().checked_add(millis)?)
    }

    /// This timestamp moved `millis` earlier; `None` before year 0.
    pub fn checked_sub_millis(&self, millis: u64) -> Option<Self> {
        let millis = i64::try_from(millis).ok()?;
        Timestamp::from_unix_millis(self.to_unix_millis().checked_sub(millis)?)
    }

    /// The 17 ASCII digits.
    pub fn as_bytes(&self) -> &[u8; TIMESTAMP_LEN] {
        &self.0
    }

    /// The 17 digits as text.
    pub fn as_str(&self) -> &str {
        // Always ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// ASN.1 GeneralizedTime with milliseconds, `YYYYMMDDHHMMSS.mmmZ`, as BTP
    /// errors carry it (the form the npm `btp-packet` writes).
    pub fn to_generalized_time(&self) -> String {
        let s = self.as_str();
        format!("{}.{}Z", &s[..14], &s[14..])
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.as_str())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s.as_bytes())
    }
}

// ---------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------

/// An ILP packet that could not be encoded or decoded. Messages start with the
/// packet kind and name the field: `ILP prepare: destination: invalid address …`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IlpError {
    /// Malformed or truncated OER.
    #[error("{context}: {error}")]
    Oer {
        /// `ILP packet`, `ILP prepare`, `ILP fulfill` or `ILP reject`.
        context: &'static str,
        /// What the reader found.
        error: OerError,
    },
    /// An envelope type other than 12, 13, 14.
    #[error("ILP packet: type: unknown type {0} (expected 12, 13 or 14)")]
    UnknownType(u8),
    /// A valid packet of another type than the caller asked for.
    #[error("ILP packet: type: expected {expected} ({expected_type}), found type {found}")]
    UnexpectedType {
        expected: &'static str,
        expected_type: u8,
        found: u8,
    },
    /// An invalid ILP address.
    #[error("{context}: {field}: {error}")]
    InvalidAddress {
        context: &'static str,
        field: &'static str,
        error: AddressError,
    },
    /// An invalid expiry.
    #[error("{context}: {field}: {error}")]
    InvalidTimestamp {
        context: &'static str,
        field: &'static str,
        error: TimestampError,
    },
    /// An error code that is not three ASCII characters.
    #[error("{context}: code: `{shown}` is not 3 ASCII characters")]
    InvalidCode {
        context: &'static str,
        shown: String,
    },
    /// A field above its size limit (when encoding).
    #[error("{context}: {field}: length {length} exceeds maximum {max}")]
    TooLong {
        context: &'static str,
        field: &'static str,
        length: usize,
        max: usize,
    },
}

const CTX_PACKET: &str = "ILP packet";
const CTX_PREPARE: &str = "ILP prepare";
const CTX_FULFILL: &str = "ILP fulfill";
const CTX_REJECT: &str = "ILP reject";

fn oer(context: &'static str) -> impl Fn(OerError) -> IlpError {
    move |error| IlpError::Oer { context, error }
}

/// Validate an address read off the wire, without allocating unless it is invalid.
fn check_address_field(
    context: &'static str,
    field: &'static str,
    bytes: &[u8],
) -> Result<(), IlpError> {
    check_address(bytes).map_err(|problem| IlpError::InvalidAddress {
        context,
        field,
        error: AddressError {
            shown: shown(bytes),
            problem,
        },
    })
}

fn check_data(context: &'static str, data: &[u8]) -> Result<(), IlpError> {
    if data.len() > MAX_DATA_LEN {
        return Err(IlpError::TooLong {
            context,
            field: "data",
            length: data.len(),
            max: MAX_DATA_LEN,
        });
    }
    Ok(())
}

fn check_code(context: &'static str, code: &[u8; 3]) -> Result<(), IlpError> {
    if code.is_ascii() {
        Ok(())
    } else {
        Err(IlpError::InvalidCode {
            context,
            shown: shown(code),
        })
    }
}

/// Wrap contents in the envelope.
fn envelope(packet_type: u8, contents: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + oer::var_octets_size(contents.len()));
    w.write_u8(packet_type);
    w.write_var_octets(contents);
    w.into_inner()
}

/// Split an envelope into its type and contents; no trailing bytes allowed.
fn open_envelope(bytes: &[u8]) -> Result<(u8, &'static str, &[u8]), IlpError> {
    let mut r = Reader::new(bytes);
    let packet_type = r.read_u8("type").map_err(oer(CTX_PACKET))?;
    let context = match packet_type {
        TYPE_PREPARE => CTX_PREPARE,
        TYPE_FULFILL => CTX_FULFILL,
        TYPE_REJECT => CTX_REJECT,
        other => return Err(IlpError::UnknownType(other)),
    };
    let contents = r.read_var_octets("contents").map_err(oer(context))?;
    r.finish("contents").map_err(oer(context))?;
    Ok((packet_type, context, contents))
}

fn expect_type<'a>(
    bytes: &'a [u8],
    expected_type: u8,
    expected: &'static str,
) -> Result<&'a [u8], IlpError> {
    let (found, _, contents) = open_envelope(bytes)?;
    if found != expected_type {
        return Err(IlpError::UnexpectedType {
            expected,
            expected_type,
            found,
        });
    }
    Ok(contents)
}

/// An ILP Prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Amount in the units of the bilateral account.
    pub amount: u64,
    /// Expiry.
    pub expires_at: Timestamp,
    /// SHA-256 of the fulfillment.
    pub execution_condition: [u8; 32],
    /// Destination address.
    pub destination: Address,
    /// End-to-end data, at most 32767 bytes.
    pub data: Vec<u8>,
}

impl Prepare {
    /// A zero-amount bilateral control message (like ILDCP's `peer.config`): amount
    /// 0 and [`PEER_PROTOCOL_CONDITION`]. `destination` should be a `peer.` address.
    pub fn peer_control(destination: Address, expires_at: Timestamp, data: Vec<u8>) -> Self {
        Prepare {
            amount: 0,
            expires_at,
            execution_condition: PEER_PROTOCOL_CONDITION,
            destination,
            data,
        }
    }

    /// Whether this is a zero-amount control message to a `peer.` address with
    /// the well-known condition.
    pub fn is_peer_control(&self) -> bool {
        self.amount == 0
            && self.execution_condition == PEER_PROTOCOL_CONDITION
            && self.destination.is_peer()
    }

    fn encode_contents(&self) -> Result<Vec<u8>, IlpError> {
        check_data(CTX_PREPARE, &self.data)?;
        let dest = self.destination.as_str().as_bytes();
        let mut w = Writer::with_capacity(
            8 + TIMESTAMP_LEN
                + 32
                + oer::var_octets_size(dest.len())
                + oer::var_octets_size(self.data.len()),
        );
        w.write_u64(self.amount);
        w.write_bytes(self.expires_at.as_bytes());
        w.write_bytes(&self.execution_condition);
        w.write_var_octets(dest);
        w.write_var_octets(&self.data);
        Ok(w.into_inner())
    }

    fn decode_contents(contents: &[u8]) -> Result<Self, IlpError> {
        let e = oer(CTX_PREPARE);
        let mut r = Reader::new(contents);
        let amount = r.read_u64("amount").map_err(&e)?;
        let expires_at = r.read_bytes(TIMESTAMP_LEN, "expires_at").map_err(&e)?;
        let expires_at =
            Timestamp::parse(expires_at).map_err(|error| IlpError::InvalidTimestamp {
                context: CTX_PREPARE,
                field: "expires_at",
                error,
            })?;
        let execution_condition = r.read_array("execution_condition").map_err(&e)?;
        let destination = r
            .read_var_octets_max("destination", MAX_ADDRESS_LEN)
            .map_err(&e)?;
        check_address_field(CTX_PREPARE, "destination", destination)?;
        let data = r.read_var_octets_max("data", MAX_DATA_LEN).map_err(&e)?;
        r.finish("data").map_err(&e)?;
        // Allocate only once everything has been checked.
        Ok(Prepare {
            amount,
            expires_at,
            execution_condition,
            destination: Address::from_checked(destination),
            data: data.to_vec(),
        })
    }

    /// Encode with the envelope. Fails only if `data` exceeds 32767 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, IlpError> {
        Ok(envelope(TYPE_PREPARE, &self.encode_contents()?))
    }

    /// Decode an enveloped Prepare.
    pub fn decode(bytes: &[u8]) -> Result<Self, IlpError> {
        Prepare::decode_contents(expect_type(bytes, TYPE_PREPARE, "prepare")?)
    }
}

/// An ILP Fulfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fulfill {
    /// Preimage of the Prepare's condition.
    pub fulfillment: [u8; 32],
    /// End-to-end data, at most 32767 bytes.
    pub data: Vec<u8>,
}

impl Fulfill {
    /// The answer to a bilateral control message: [`PEER_PROTOCOL_FULFILLMENT`].
    pub fn peer_control(data: Vec<u8>) -> Self {
        Fulfill {
            fulfillment: PEER_PROTOCOL_FULFILLMENT,
            data,
        }
    }

    fn encode_contents(&self) -> Result<Vec<u8>, IlpError> {
        check_data(CTX_FULFILL, &self.data)?;
        let mut w = Writer::with_capacity(32 + oer::var_octets_size(self.data.len()));
        w.write_bytes(&self.fulfillment);
        w.write_var_octets(&self.data);
        Ok(w.into_inner())
    }

    fn read_contents(contents: &[u8]) -> Result<([u8; 32], &[u8]), IlpError> {
        let e = oer(CTX_FULFILL);
        let mut r = Reader::new(contents);
        let fulfillment = r.read_array("fulfillment").map_err(&e)?;
        let data = r.read_var_octets_max("data", MAX_DATA_LEN).map_err(&e)?;
        r.finish("data").map_err(&e)?;
        Ok((fulfillment, data))
    }

    fn decode_contents(contents: &[u8]) -> Result<Self, IlpError> {
        let (fulfillment, data) = Fulfill::read_contents(contents)?;
        Ok(Fulfill {
            fulfillment,
            data: data.to_vec(),
        })
    }

    /// The fulfillment and data of an enveloped Fulfill, read in place: what
    /// [`Fulfill::decode`] accepts, nothing copied.
    pub fn read(bytes: &[u8]) -> Result<([u8; 32], &[u8]), IlpError> {
        Fulfill::read_contents(expect_type(bytes, TYPE_FULFILL, "fulfill")?)
    }

    /// Encode with the envelope. Fails only if `data` exceeds 32767 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, IlpError> {
        Ok(envelope(TYPE_FULFILL, &self.encode_contents()?))
    }

    /// Decode an enveloped Fulfill.
    pub fn decode(bytes: &[u8]) -> Result<Self, IlpError> {
        Fulfill::decode_contents(expect_type(bytes, TYPE_FULFILL, "fulfill")?)
    }
}

/// An ILP Reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Error code, three ASCII characters such as `F02` (see [`codes`]).
    pub code: [u8; 3],
    /// Who produced the error; `None` encodes as the empty string, which some
    /// implementations send.
    pub triggered_by: Option<Address>,
    /// Human-readable message (UTF-8 by convention; not checked).
    pub message: Vec<u8>,
    /// End-to-end data, at most 32767 bytes.
    pub data: Vec<u8>,
}

impl Reject {
    /// A reject with a text message and no data.
    pub fn new(code: [u8; 3], triggered_by: Option<Address>, message: &str) -> Self {
        Reject {
            code,
            triggered_by,
            message: message.as_bytes().to_vec(),
            data: Vec::new(),
        }
    }

    /// The code as text (always ASCII once validated).
    pub fn code_str(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Whether the code is a final (`F`) error.
    pub fn is_final(&self) -> bool {
        self.code[0] == b'F'
    }

    fn encode_contents(&self) -> Result<Vec<u8>, IlpError> {
        check_code(CTX_REJECT, &self.code)?;
        check_data(CTX_REJECT, &self.data)?;
        let by = self
            .triggered_by
            .as_ref()
            .map_or(&b""[..], |a| a.as_str().as_bytes());
        let mut w = Writer::with_capacity(
            3 + oer::var_octets_size(by.len())
                + oer::var_octets_size(self.message.len())
                + oer::var_octets_size(self.data.len()),
        );
        w.write_bytes(&self.code);
        w.write_var_octets(by);
        w.write_var_octets(&self.message);
        w.write_var_octets(&self.data);
        Ok(w.into_inner())
    }

    fn decode_contents(contents: &[u8]) -> Result<Self, IlpError> {
        let e = oer(CTX_REJECT);
        let mut r = Reader::new(contents);
        let code = r.read_array::<3>("code").map_err(&e)?;
        check_code(CTX_REJECT, &code)?;
        let by = r
            .read_var_octets_max("triggered_by", MAX_ADDRESS_LEN)
            .map_err(&e)?;
        if !by.is_empty() {
            check_address_field(CTX_REJECT, "triggered_by", by)?;
        }
        let message = r.read_var_octets("message").map_err(&e)?;
        let data = r.read_var_octets_max("data", MAX_DATA_LEN).map_err(&e)?;
        r.finish("data").map_err(&e)?;
        // Allocate only once everything has been checked.
        Ok(Reject {
            code,
            triggered_by: (!by.is_empty()).then(|| Address::from_checked(by)),
            message: message.to_vec(),
            data: data.to_vec(),
        })
    }

    /// Encode with the envelope. Fails if the code is not ASCII or `data` exceeds
    /// 32767 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, IlpError> {
        Ok(envelope(TYPE_REJECT, &self.encode_contents()?))
    }

    /// Decode an enveloped Reject.
    pub fn decode(bytes: &[u8]) -> Result<Self, IlpError> {
        Reject::decode_contents(expect_type(bytes, TYPE_REJECT, "reject")?)
    }
}

/// Any ILP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Type 12.
    Prepare(Prepare),
    /// Type 13.
    Fulfill(Fulfill),
    /// Type 14.
    Reject(Reject),
}

impl Packet {
    /// The envelope type.
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Prepare(_) => TYPE_PREPARE,
            Packet::Fulfill(_) => TYPE_FULFILL,
            Packet::Reject(_) => TYPE_REJECT,
        }
    }

    /// Encode with the envelope.
    pub fn encode(&self) -> Result<Vec<u8>, IlpError> {
        match self {
            Packet::Prepare(p) => p.encode(),
            Packet::Fulfill(p) => p.encode(),
            Packet::Reject(p) => p.encode(),
        }
    }

    /// Decode any enveloped ILP packet.
    pub fn decode(bytes: &[u8]) -> Result<Self, IlpError> {
        let (packet_type, _, contents) = open_envelope(bytes)?;
        Ok(match packet_type {
            TYPE_PREPARE => Packet::Prepare(Prepare::decode_contents(contents)?),
            TYPE_FULFILL => Packet::Fulfill(Fulfill::decode_contents(contents)?),
            _ => Packet::Reject(Reject::decode_contents(contents)?),
        })
    }
}

impl From<Prepare> for Packet {
    fn from(p: Prepare) -> Self {
        Packet::Prepare(p)
    }
}

impl From<Fulfill> for Packet {
    fn from(p: Fulfill) -> Self {
        Packet::Fulfill(p)
    }
}

impl From<Reject> for Packet {
    fn from(p: Reject) -> Self {
        Packet::Reject(p)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn arr32(s: &str) -> [u8; 32] {
        hex(s).try_into().unwrap()
    }

    // Fixtures of the npm `ilp-packet` test suite (interledgerjs), re-encoded here.
    const PREPARE_HEX: &str = "0c68000000000000006b3230313731323233303132313430353439\
        74e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de1\
        0d6578616d706c652e616c696365\
        205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
    const FULFILL_HEX: &str = "0d41\
        c3866b48749ccf113b2e15c25d2407fbfc14476fe7296bb1bf1bcd9e6e416650\
        20673febd78a33b28e1c0db14c9a06251a05fa831ed4ed91ebcd150e7249c2e600";
    const REJECT_HEX: &str = "0e41463031\
        0e6578616d706c652e75732e626f62\
        276d697373696e672064657374696e6174696f6e2e206c65646765723d6578616d706c652e75732e\
        06000000041041";

    fn fixture_prepare() -> Prepare {
        Prepare {
            amount: 107,
            expires_at: "20171223012140549".parse().unwrap(),
            execution_condition: arr32(
                "74e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de1",
            ),
            destination: Address::new("example.alice").unwrap(),
            data: hex("5db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0"),
        }
    }

    fn fixture_fulfill() -> Fulfill {
        Fulfill {
            fulfillment: arr32("c3866b48749ccf113b2e15c25d2407fbfc14476fe7296bb1bf1bcd9e6e416650"),
            data: hex("673febd78a33b28e1c0db14c9a06251a05fa831ed4ed91ebcd150e7249c2e600"),
        }
    }

    fn fixture_reject() -> Reject {
        Reject {
            code: *b"F01",
            triggered_by: Some(Address::new("example.us.bob").unwrap()),
            message: b"missing destination. ledger=example.us.".to_vec(),
            data: vec![0, 0, 0, 4, 0x10, 0x41],
        }
    }

    pub(crate) fn fixtures() -> Vec<(Packet, Vec<u8>)> {
        vec![
            (fixture_prepare().into(), hex(PREPARE_HEX)),
            (fixture_fulfill().into(), hex(FULFILL_HEX)),
            (fixture_reject().into(), hex(REJECT_HEX)),
        ]
    }

    #[test]
    fn npm_fixtures_encode_and_decode_exactly() {
        for (packet, bytes) in fixtures() {
            assert_eq!(packet.encode().unwrap(), bytes, "{packet:?}");
            assert_eq!(Packet::decode(&bytes).unwrap(), packet);
        }
        assert_eq!(
            Prepare::decode(&hex(PREPARE_HEX)).unwrap(),
            fixture_prepare()
        );
        assert_eq!(
            Fulfill::decode(&hex(FULFILL_HEX)).unwrap(),
            fixture_fulfill()
        );
        assert_eq!(Reject::decode(&hex(REJECT_HEX)).unwrap(), fixture_reject());
    }

    #[test]
    fn hand_built_ildcp_request() {
        // RFC 31: amount 0, peer.config, the zero-fulfillment condition, no data.
        let prepare = Prepare::peer_control(
            Address::new("peer.config").unwrap(),
            "20180101000000000".parse().unwrap(),
            vec![],
        );
        assert!(prepare.is_peer_control());
        let mut expected = vec![12, 8 + 17 + 32 + 12 + 1];
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(b"20180101000000000");
        expected.extend_from_slice(&PEER_PROTOCOL_CONDITION);
        expected.push(11);
        expected.extend_from_slice(b"peer.config");
        expected.push(0);
        assert_eq!(prepare.encode().unwrap(), expected);
        let fulfill = Fulfill::peer_control(vec![]);
        let mut expected = vec![13, 33];
        expected.extend_from_slice(&[0; 32]);
        expected.push(0);
        assert_eq!(fulfill.encode().unwrap(), expected);
    }

    #[test]
    fn peer_protocol_condition_is_sha256_of_zero_fulfillment() {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(PEER_PROTOCOL_FULFILLMENT).into();
        assert_eq!(digest, PEER_PROTOCOL_CONDITION);
    }

    #[test]
    fn long_data_uses_long_form_lengths() {
        let mut p = fixture_prepare();
        p.data = vec![7; MAX_DATA_LEN];
        let bytes = p.encode().unwrap();
        // Envelope: 12, 0x82 + two length bytes.
        assert_eq!(&bytes[..2], &[12, 0x82]);
        assert_eq!(Prepare::decode(&bytes).unwrap(), p);
        p.data.push(0);
        assert_eq!(
            p.encode().unwrap_err().to_string(),
            "ILP prepare: data: length 32768 exceeds maximum 32767"
        );
    }

    #[test]
    fn address_grammar() {
        for good in [
            "g.a",
            "g.us-fed.ach.0.acmebank.swx0a0.acmecorp.sales.199.~ipr.cdfa5e16-e759-4ba3-88f6-8b9dc83c1868.2",
            "private.x",
            "example.alice",
            "peer.config",
            "peer.btp-nips",
            "self.me",
            "test.t",
            "test1.t",
            "test3.T_~-",
            "local.l",
        ] {
            let a = Address::new(good).unwrap();
            assert_eq!(a.as_str(), good);
        }
        for (bad, problem) in [
            ("", AddressProblem::Empty),
            ("g", AddressProblem::NoSegment),
            ("g.", AddressProblem::EmptySegment),
            ("g..a", AddressProblem::EmptySegment),
            (".g.a", AddressProblem::UnknownScheme),
            ("test4.a", AddressProblem::UnknownScheme),
            ("G.a", AddressProblem::UnknownScheme),
            ("foo", AddressProblem::UnknownScheme),
            ("g.a b", AddressProblem::InvalidByte(b' ')),
            ("g.a/b", AddressProblem::InvalidByte(b'/')),
            ("g.é", AddressProblem::InvalidByte(0xc3)),
        ] {
            assert_eq!(Address::new(bad).unwrap_err().problem, problem, "{bad:?}");
        }
        let long = format!("g.{}", "a".repeat(1021));
        assert_eq!(long.len(), 1023);
        assert!(Address::new(long.clone()).is_ok());
        assert_eq!(
            Address::new(long + "a").unwrap_err().problem,
            AddressProblem::TooLong(1024)
        );
        let a = Address::new("g.btp-nips.node1.abcdef").unwrap();
        assert!(a.starts_with(&Address::new("g.btp-nips").unwrap()));
        assert!(!a.starts_with(&Address::new("g.btp").unwrap()));
        assert_eq!(a.scheme(), "g");
        assert_eq!(
            a.segments().collect::<Vec<_>>(),
            ["btp-nips", "node1", "abcdef"]
        );
    }

    #[test]
    fn invalid_destination_is_named() {
        let mut bytes = hex(PREPARE_HEX);
        // Destination "example.alice" starts at 2 + 8 + 17 + 32 + 1.
        let at = 2 + 8 + 17 + 32 + 1;
        bytes[at..at + 7].copy_from_slice(b"foo.bar");
        let err = Packet::decode(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ILP prepare: destination: invalid address `foo.bar.alice`: unknown allocation scheme"
        );
    }

    #[test]
    fn timestamps() {
        for good in [
            "20171224161432279",
            "20171225000000000",
            "99991224161432279",
            "20161231235959852",
            "20000229000000000",
        ] {
            assert_eq!(Timestamp::parse(good.as_bytes()).unwrap().as_str(), good);
        }
        // RFC 30's invalid examples, and a few more.
        for bad in [
            "20171224235312.431+0200",
            "201712242153124318",
            "20171324161432200",
            "20171224230000000.",
            "20171224240000000",
            "20171224215300",
            "2017122421531",
            "20161231235960852",
            "19000229000000000",
            "2017122416143227a",
            "20170001000000000",
        ] {
            assert!(Timestamp::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let t: Timestamp = "20171223012140549".parse().unwrap();
        assert_eq!(t.to_unix_millis(), 1_513_992_100_549);
        assert_eq!(Timestamp::from_unix_millis(1_513_992_100_549), Some(t));
        assert_eq!(t.to_generalized_time(), "20171223012140.549Z");
        assert_eq!(
            Timestamp::from_unix_millis(0).unwrap().as_str(),
            "19700101000000000"
        );
        assert_eq!(
            Timestamp::from_unix_millis(MIN_UNIX_MILLIS)
                .unwrap()
                .as_str(),
            "00000101000000000"
        );
        assert_eq!(
            Timestamp::from_unix_millis(MAX_UNIX_MILLIS)
                .unwrap()
                .as_str(),
            "99991231235959999"
        );
        assert_eq!(Timestamp::from_unix_millis(MAX_UNIX_MILLIS + 1), None);
        assert_eq!(
            t.checked_add_millis(30_000).unwrap().as_str(),
            "20171223012210549"
        );
        let now = Timestamp::now();
        assert!(now > t);
        let back = Timestamp::from_system_time(now.to_system_time().unwrap()).unwrap();
        assert_eq!(back, now);
    }

    #[test]
    fn reject_with_empty_triggered_by() {
        let reject = Reject::new(codes::T00_INTERNAL_ERROR, None, "oops");
        let bytes = reject.encode().unwrap();
        assert_eq!(
            bytes,
            [&[14, 3 + 1 + 5 + 1][..], b"T00", &[0, 4], b"oops", &[0]].concat()
        );
        assert_eq!(Reject::decode(&bytes).unwrap(), reject);
        let bad = Reject {
            code: [b'F', 0xff, b'0'],
            ..reject
        };
        assert_eq!(
            bad.encode().unwrap_err().to_string(),
            "ILP reject: code: `F\u{FFFD}0` is not 3 ASCII characters"
        );
    }

    #[test]
    fn type_errors() {
        assert_eq!(
            Packet::decode(&[]).unwrap_err().to_string(),
            "ILP packet: type: unexpected end of input: needs 1 bytes, 0 remaining"
        );
        assert_eq!(
            Packet::decode(&[1, 0]).unwrap_err(),
            IlpError::UnknownType(1)
        );
        assert_eq!(
            Fulfill::decode(&hex(PREPARE_HEX)).unwrap_err().to_string(),
            "ILP packet: type: expected fulfill (13), found type 12"
        );
    }

    #[test]
    fn truncated_at_every_offset_and_trailing_bytes() {
        for (_, bytes) in fixtures() {
            for cut in 0..bytes.len() {
                assert!(Packet::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                Packet::decode(&longer),
                Err(IlpError::Oer {
                    error: OerError::TrailingBytes { .. },
                    ..
                })
            ));
        }
        // Trailing bytes inside the contents (envelope length covers them).
        let mut bytes = hex(FULFILL_HEX);
        bytes[1] += 1;
        bytes.push(0);
        assert_eq!(
            Packet::decode(&bytes).unwrap_err().to_string(),
            "ILP fulfill: 1 trailing bytes after data"
        );
    }

    #[test]
    fn oversize_claims_are_rejected() {
        let err = Packet::decode(&[12, 0x84, 0x7f, 0xff, 0xff, 0xff, 1, 2]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ILP prepare: contents: length 2147483647 exceeds remaining 2 bytes"
        );
        // A data field claiming 40000 bytes inside otherwise valid contents.
        let mut contents = vec![0; 8];
        contents.extend_from_slice(b"20171223012140549");
        contents.extend_from_slice(&[0; 32]);
        contents.extend_from_slice(b"\x07g.alice");
        contents.extend_from_slice(&[0x82, 0x9c, 0x40]);
        let bytes = envelope(TYPE_PREPARE, &contents);
        assert_eq!(
            Packet::decode(&bytes).unwrap_err().to_string(),
            "ILP prepare: data: length 40000 exceeds maximum 32767"
        );
    }

    pub(crate) fn address_strategy() -> impl Strategy<Value = Address> {
        let scheme = prop::sample::select(SCHEMES.to_vec());
        let chars: Vec<char> = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['_', '~', '-'])
            .collect();
        let segment = prop::collection::vec(prop::sample::select(chars), 1..12)
            .prop_map(|c| c.into_iter().collect::<String>());
        (scheme, prop::collection::vec(segment, 1..5))
            .prop_map(|(s, segs)| Address::new(format!("{s}.{}", segs.join("."))).unwrap())
    }

    pub(crate) fn timestamp_strategy() -> impl Strategy<Value = Timestamp> {
        (MIN_UNIX_MILLIS..=MAX_UNIX_MILLIS).prop_map(|ms| Timestamp::from_unix_millis(ms).unwrap())
    }

    fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..200),
            1 => prop::collection::vec(any::<u8>(), 0..=MAX_DATA_LEN),
        ]
    }

    pub(crate) fn packet_strategy() -> impl Strategy<Value = Packet> {
        let prepare = (
            any::<u64>(),
            timestamp_strategy(),
            any::<[u8; 32]>(),
            address_strategy(),
            data_strategy(),
        )
            .prop_map(
                |(amount, expires_at, execution_condition, destination, data)| {
                    Packet::Prepare(Prepare {
                        amount,
                        expires_at,
                        execution_condition,
                        destination,
                        data,
                    })
                },
            );
        let fulfill = (any::<[u8; 32]>(), data_strategy())
            .prop_map(|(fulfillment, data)| Packet::Fulfill(Fulfill { fulfillment, data }));
        let reject = (
            prop::array::uniform3(0u8..128),
            proptest::option::of(address_strategy()),
            prop::collection::vec(any::<u8>(), 0..300),
            data_strategy(),
        )
            .prop_map(|(code, triggered_by, message, data)| {
                Packet::Reject(Reject {
                    code,
                    triggered_by,
                    message,
                    data,
                })
            });
        prop_oneof![prepare, fulfill, reject]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip(packet in packet_strategy()) {
            let bytes = packet.encode().unwrap();
            prop_assert_eq!(Packet::decode(&bytes).unwrap(), packet);
            // Every strict prefix fails.
            for cut in [0, 1, 2, bytes.len() / 2, bytes.len() - 1] {
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
        fn decode_mutated_packets(packet in packet_strategy(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = packet.encode().unwrap();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(p) = Packet::decode(&bytes) {
                prop_assert_eq!(p.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn timestamp_unix_round_trip(t in timestamp_strategy()) {
            prop_assert_eq!(Timestamp::from_unix_millis(t.to_unix_millis()), Some(t));
            prop_assert_eq!(Timestamp::parse(t.as_bytes()), Ok(t));
        }
    }
}
