//! Kind 32001, the ILP node announcement (PROTOCOLS.md): building ours, and judging a
//! peer's. Judging comes in two steps, because a relay can hand us anything:
//!
//! 1. [`screen`]: is this event the author's own 32001 `ilp-node-info` slot at all (valid
//!    id and signature, kind, author, `d` tag)? Events that are not are set aside, so a
//!    relay cannot make a forged "newer" event outrank the author's real one.
//! 2. [`select_newest`] among the authentic ones (newest `created_at`, then lowest id —
//!    relays disagree on ties), then [`validate`] what the author claims: the ILP address
//!    grammar and its binding to the author's key, the endpoint scheme, the EVM address,
//!    the version. A claim that fails is the author's fault: the peer is failed with it.
//!
//! An announced endpoint is where this node will dial, so it may not point into the
//! node's own network: an endpoint whose host is a loopback, private, link-local,
//! unspecified, shared (CGNAT), documentation or otherwise reserved address is refused
//! ([`check_announced_host`]) unless `nostr.allow_ws_loopback` is on (tests, private
//! deployments).

use nostr_sdk::prelude::{
    Event, EventBuilder, Keys, Kind, PublicKey, Tag, TagKind, Timestamp as NostrTimestamp, Url,
};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ports::Announcement;
use crate::untrusted::untrusted;
use crate::wire::ilp::Address;

/// The announcement's kind (an addressable event).
pub const ANNOUNCEMENT_KIND: u16 = 32001;
/// The `d` tag: one announcement per pubkey.
pub const ANNOUNCEMENT_D_TAG: &str = "ilp-node-info";
/// Every ILP address announced here lives under this prefix.
pub const ADDRESS_PREFIX: &str = "g.btp-nips";
/// The announcement format this node writes; it reads every 1.x.
pub const ANNOUNCEMENT_VERSION: &str = "1.0.0";
/// The major version of the announcement format this node understands.
pub const SUPPORTED_MAJOR_VERSION: u64 = 1;

pub fn announcement_kind() -> Kind {
    Kind::Custom(ANNOUNCEMENT_KIND)
}

/// Why an announcement is not acceptable. The text is the peer's failure reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnnouncement {
    #[error("invalid announcement: bad id or signature")]
    Signature,
    #[error("invalid announcement: kind {0}, expected 32001")]
    Kind(u16),
    #[error("invalid announcement: signed by {found}, asked for {expected}")]
    Author { expected: String, found: String },
    #[error("invalid announcement: d tag {0:?}, expected \"ilp-node-info\"")]
    DTag(Option<String>),
    #[error("invalid announcement: no {0} tag")]
    MissingTag(&'static str),
    #[error("invalid announcement: ilp-address: {0}")]
    Address(String),
    #[error("invalid announcement: ilp-address {address} is not bound to its author (suffix must be {expected})")]
    AddressBinding { address: String, expected: String },
    #[error("invalid announcement: ilp-endpoint: {0}")]
    Endpoint(String),
    #[error("invalid announcement: ilp-endpoint: endpoint {endpoint} is {}; set nostr.allow_ws_loopback to allow it", class.describe())]
    EndpointHost { endpoint: String, class: HostClass },
    #[error("invalid announcement: base-address {0:?} is not 0x followed by 40 hex characters")]
    BaseAddress(String),
    #[error("invalid announcement: version: {0}")]
    Version(String),
    #[error("invalid announcement: content is not a JSON object: {0}")]
    Content(String),
}

/// What this node announces (the fields of its kind 32001 event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncementFields {
    /// `<nodeId>` of the address (the config's `node.id`).
    pub node_id: String,
    /// BTP WebSocket URL.
    pub endpoint: String,
    /// EVM address receiving channel payments.
    pub base_address: String,
    pub supported_tokens: Vec<String>,
    pub features: Vec<String>,
    /// Optional JSON object published as the content (`operatorName`, …).
    pub metadata: Option<serde_json::Value>,
}

/// The ILP address bound to `pubkey`: `g.btp-nips.<nodeId>.<first 16 hex of the pubkey>`.
pub fn ilp_address_for(node_id: &str, pubkey: &PublicKey) -> String {
    format!("{ADDRESS_PREFIX}.{node_id}.{}", &pubkey.to_hex()[..16])
}

/// `nodeId` grammar: lowercase alphanumeric, 1–32 characters, not starting with a digit.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !id.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "nodeId {id:?} must be 1-32 lowercase letters or digits, not starting with a digit"
        ))
    }
}

/// `wss://…`, or `ws://` to a loopback host when `allow_ws_loopback`.
pub fn check_endpoint(endpoint: &str, allow_ws_loopback: bool) -> Result<(), String> {
    // The endpoint may be a peer's: shown bounded and escaped.
    let shown = untrusted(endpoint);
    let url = Url::parse(endpoint).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{shown:?} has no host"))?;
    match url.scheme() {
        "wss" => Ok(()),
        "ws" => {
            let loopback = host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            match (loopback, allow_ws_loopback) {
                (true, true) => Ok(()),
                (true, false) => Err(format!(
                    "{shown:?} uses ws:// and ws:// loopback endpoints are not allowed (nostr.allow_ws_loopback)"
                )),
                (false, _) => Err(format!(
                    "{shown:?} uses ws:// to a host that is not loopback; wss:// is required"
                )),
            }
        }
        other => Err(format!(
            "{shown:?} has scheme {}, expected wss",
            untrusted(other)
        )),
    }
}

/// The kind of address an announced endpoint's host is, when it is not a public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostClass {
    /// 127.0.0.0/8, ::1, `localhost`.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), RFC 4193 (fc00::/7), fec0::/10.
    Private,
    /// 169.254/16 (cloud metadata services live here), fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 100.64/10, the carrier-grade NAT space (RFC 6598).
    Shared,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32.
    Documentation,
    /// Multicast, broadcast, benchmarking (198.18/15), 192.0.0/24, 240/4.
    Reserved,
}

impl HostClass {
    pub const ALL: [HostClass; 7] = [
        HostClass::Loopback,
        HostClass::Private,
        HostClass::LinkLocal,
        HostClass::Unspecified,
        HostClass::Shared,
        HostClass::Documentation,
        HostClass::Reserved,
    ];

    /// "a private address", … (for the refusal).
    pub fn describe(self) -> &'static str {
        match self {
            HostClass::Loopback => "a loopback address",
            HostClass::Private => "a private address",
            HostClass::LinkLocal => "a link-local address",
            HostClass::Unspecified => "an unspecified address",
            HostClass::Shared => "a shared (CGNAT) address",
            HostClass::Documentation => "a documentation address",
            HostClass::Reserved => "a reserved address",
        }
    }
}

/// The class of `ip` if it is not a public unicast address.
pub fn ip_class(ip: IpAddr) -> Option<HostClass> {
    match ip {
        IpAddr::V4(v4) => ipv4_class(v4),
        IpAddr::V6(v6) => ipv6_class(v6),
    }
}

fn ipv4_class(ip: Ipv4Addr) -> Option<HostClass> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => HostClass::Unspecified,
        (127, _, _) => HostClass::Loopback,
        (10, _, _) | (192, 168, _) => HostClass::Private,
        (172, b, _) if (16..32).contains(&b) => HostClass::Private,
        (169, 254, _) => HostClass::LinkLocal,
        (100, b, _) if (64..128).contains(&b) => HostClass::Shared,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => HostClass::Documentation,
        (192, 0, 0) | (198, 18..=19, _) => HostClass::Reserved,
        (a, _, _) if a >= 224 => HostClass::Reserved,
        _ => return None,
    })
}

fn ipv6_class(ip: Ipv6Addr) -> Option<HostClass> {
    // An IPv4 address in IPv6 clothing is judged as the IPv4 address: ::ffff:a.b.c.d
    // (mapped), ::a.b.c.d (compatible) and 64:ff9b::a.b.c.d (NAT64) all reach it.
    let s = ip.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if ip.is_unspecified() {
        return Some(HostClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(HostClass::Loopback);
    }
    let mapped = s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped || nat64 {
        return ipv4_class(embedded);
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => HostClass::Private,
        x if x & 0xffc0 == 0xfec0 => HostClass::Private,
        x if x & 0xffc0 == 0xfe80 => HostClass::LinkLocal,
        x if x & 0xff00 == 0xff00 => HostClass::Reserved,
        0x2001 if s[1] == 0x0db8 => HostClass::Documentation,
        _ => return None,
    })
}

/// Refuses an announced endpoint whose host is not a public address, unless
/// `allow_ws_loopback`. Host names are not resolved here (the answer could change by the
/// time the node dials): an IP literal is judged directly, `localhost` and names under
/// `.localhost` are loopback, and every other name passes.
pub fn check_announced_host(
    endpoint: &str,
    allow_ws_loopback: bool,
) -> Result<(), InvalidAnnouncement> {
    if allow_ws_loopback {
        return Ok(());
    }
    let Ok(url) = Url::parse(endpoint) else {
        return Ok(()); // refused by check_endpoint with its own reason
    };
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    let host = host.trim_matches(|c| c == '[' || c == ']');
    let class = match host.parse::<IpAddr>() {
        Ok(ip) => ip_class(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            (name == "localhost" || name.ends_with(".localhost")).then_some(HostClass::Loopback)
        }
    };
    match class {
        Some(class) => Err(InvalidAnnouncement::EndpointHost {
            endpoint: untrusted(url.as_str()).to_string(),
            class,
        }),
        None => Ok(()),
    }
}

/// `0x` followed by 40 hex characters.
pub fn check_base_address(address: &str) -> Result<(), String> {
    let ok = address.len() == 42
        && address.starts_with("0x")
        && address[2..].chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{address:?} is not 0x followed by 40 hex characters"
        ))
    }
}

/// Semantic version `MAJOR.MINOR.PATCH[-pre][+build]` with a major this node understands.
pub fn check_version(version: &str) -> Result<(), String> {
    let shown = untrusted(version);
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_digit())
            && (p.len() == 1 || !p.starts_with('0'))
    };
    if parts.len() != 3 || !parts.iter().all(numeric) {
        return Err(format!("{shown:?} is not a semantic version"));
    }
    let major: u64 = parts[0]
        .parse()
        .map_err(|_| format!("{shown:?}: major version out of range"))?;
    if major != SUPPORTED_MAJOR_VERSION {
        return Err(format!(
            "{shown:?} is not supported (this node reads {SUPPORTED_MAJOR_VERSION}.x)"
        ));
    }
    Ok(())
}

fn tag_value<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|s| s.first().map(String::as_str) == Some(name))
        .and_then(|s| s.get(1))
        .map(String::as_str)
}

impl AnnouncementFields {
    /// Checks our own fields before they are published (config errors, not peer faults).
    pub fn check(&self, allow_ws_loopback: bool) -> Result<(), String> {
        check_node_id(&self.node_id)?;
        check_endpoint(&self.endpoint, allow_ws_loopback)?;
        check_base_address(&self.base_address)?;
        if let Some(m) = &self.metadata {
            if !m.is_object() {
                return Err("metadata must be a JSON object".into());
            }
        }
        Ok(())
    }

    /// Our kind 32001 event, signed, created at `created_at`.
    pub fn sign(&self, keys: &Keys, created_at: NostrTimestamp) -> Event {
        let address = ilp_address_for(&self.node_id, &keys.public_key());
        let tag = |name: &str, value: String| Tag::custom(TagKind::custom(name), [value]);
        let content = self
            .metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        EventBuilder::new(announcement_kind(), content)
            .tags([
                Tag::identifier(ANNOUNCEMENT_D_TAG),
                tag("ilp-address", address),
                tag("ilp-endpoint", self.endpoint.clone()),
                tag("base-address", self.base_address.clone()),
                tag("supported-tokens", self.supported_tokens.join(",")),
                tag("version", ANNOUNCEMENT_VERSION.to_string()),
                tag("features", self.features.join(",")),
            ])
            .custom_created_at(created_at)
            .sign_with_keys(keys)
            .expect("signing with local keys cannot fail")
    }
}

/// Step 1: is `event` `expected`'s own announcement slot? (id, signature, kind, author, d).
pub fn screen(event: &Event, expected: &PublicKey) -> Result<(), InvalidAnnouncement> {
    if event.verify().is_err() {
        return Err(InvalidAnnouncement::Signature);
    }
    if event.kind != announcement_kind() {
        return Err(InvalidAnnouncement::Kind(event.kind.as_u16()));
    }
    if event.pubkey != *expected {
        return Err(InvalidAnnouncement::Author {
            expected: expected.to_hex(),
            found: event.pubkey.to_hex(),
        });
    }
    match tag_value(event, "d") {
        Some(ANNOUNCEMENT_D_TAG) => Ok(()),
        other => Err(InvalidAnnouncement::DTag(other.map(str::to_string))),
    }
}

/// NIP-01 order for replaceable events: newest `created_at`, then lowest id.
pub fn newer(a: &Event, b: &Event) -> bool {
    (a.created_at, std::cmp::Reverse(a.id)) > (b.created_at, std::cmp::Reverse(b.id))
}

/// Step 2a: the newest of the screened events.
pub fn select_newest<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<&'a Event> {
    events
        .into_iter()
        .fold(None, |best: Option<&Event>, e| match best {
            Some(b) if !newer(e, b) => Some(b),
            _ => Some(e),
        })
}

/// Step 2b: the author's claims. `event` has passed [`screen`].
pub fn validate(
    event: &Event,
    allow_ws_loopback: bool,
) -> Result<Announcement, InvalidAnnouncement> {
    let field =
        |name: &'static str| tag_value(event, name).ok_or(InvalidAnnouncement::MissingTag(name));
    let address = field("ilp-address")?;
    let parsed = Address::new(address)
        .map_err(|e| InvalidAnnouncement::Address(untrusted(&e.to_string()).to_string()))?;
    let segments: Vec<&str> = parsed.segments().collect();
    if parsed.scheme() != "g" || segments.len() != 3 || segments[0] != "btp-nips" {
        return Err(InvalidAnnouncement::Address(format!(
            "{} is not g.btp-nips.<nodeId>.<pubkey prefix>",
            untrusted(address)
        )));
    }
    check_node_id(segments[1])
        .map_err(|e| InvalidAnnouncement::Address(untrusted(&e).to_string()))?;
    let expected = &event.pubkey.to_hex()[..16];
    if segments[2] != expected {
        return Err(InvalidAnnouncement::AddressBinding {
            address: untrusted(address).to_string(),
            expected: expected.to_string(),
        });
    }
    let endpoint = field("ilp-endpoint")?;
    check_endpoint(endpoint, allow_ws_loopback).map_err(InvalidAnnouncement::Endpoint)?;
    check_announced_host(endpoint, allow_ws_loopback)?;
    let base_address = field("base-address")?;
    check_base_address(base_address)
        .map_err(|_| InvalidAnnouncement::BaseAddress(untrusted(base_address).to_string()))?;
    check_version(field("version")?).map_err(InvalidAnnouncement::Version)?;
    // Untrusted hint (see lifecycle::priority): what the peer says of itself, capped there.
    let subscribers = if event.content.trim().is_empty() {
        None
    } else {
        let meta: serde_json::Value = serde_json::from_str(&event.content)
            .map_err(|e| InvalidAnnouncement::Content(e.to_string()))?;
        if !meta.is_object() {
            return Err(InvalidAnnouncement::Content(format!("found {meta}")));
        }
        meta.get("subscribers").and_then(serde_json::Value::as_u64)
    };
    Ok(Announcement {
        ilp_address: address.to_string(),
        endpoint: endpoint.to_string(),
        base_address: base_address.to_string(),
        subscribers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AnnouncementFields {
        AnnouncementFields {
            node_id: "alice".into(),
            endpoint: "wss://alice.example/btp".into(),
            base_address: format!("0x{}", "ab".repeat(20)),
            supported_tokens: vec!["eth".into(), "usdc".into()],
            features: vec!["subscriptions".into()],
            metadata: Some(serde_json::json!({"nodeId": "alice", "subscribers": 42})),
        }
    }

    /// Re-signs `event`'s fields with `tags` replaced, as a peer would publish them.
    fn with_tag(keys: &Keys, name: &str, value: &str) -> Event {
        let base = fields().sign(keys, NostrTimestamp::from(1_700_000_000));
        let tags: Vec<Tag> = base
            .tags
            .iter()
            .map(|t| {
                if t.as_slice()[0] == name {
                    Tag::custom(TagKind::custom(name), [value.to_string()])
                } else {
                    t.clone()
                }
            })
            .collect();
        EventBuilder::new(base.kind, base.content.clone())
            .tags(tags)
            .custom_created_at(base.created_at)
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn our_announcement_validates_and_is_bound_to_our_key() {
        let keys = Keys::generate();
        let event = fields().sign(&keys, NostrTimestamp::now());
        screen(&event, &keys.public_key()).unwrap();
        let a = validate(&event, false).unwrap();
        assert_eq!(a.ilp_address, ilp_address_for("alice", &keys.public_key()));
        assert!(a.ilp_address.ends_with(&keys.public_key().to_hex()[..16]));
        assert_eq!(a.subscribers, Some(42));
    }

    #[test]
    fn every_kind_of_bad_claim_is_refused_with_its_reason() {
        let keys = Keys::generate();
        let other = Keys::generate();
        let foreign_suffix = format!("g.btp-nips.alice.{}", &other.public_key().to_hex()[..16]);
        let cases: Vec<(&str, &str, &str)> = vec![
            ("ilp-address", &foreign_suffix, "not bound to its author"),
            ("ilp-address", "g.btp-nips.Alice.0011223344556677", "nodeId"),
            ("ilp-address", "x.btp-nips.alice.00", "ilp-address"),
            ("ilp-endpoint", "ws://peer.example/btp", "not loopback"),
            ("ilp-endpoint", "ws://127.0.0.1:9/btp", "not allowed"),
            ("ilp-endpoint", "https://peer.example", "expected wss"),
            ("base-address", "0x1234", "base-address"),
            ("version", "2.0.0", "not supported"),
            ("version", "one", "semantic version"),
        ];
        for (tag, value, reason) in cases {
            let event = with_tag(&keys, tag, value);
            screen(&event, &keys.public_key()).unwrap();
            let err = validate(&event, false).unwrap_err().to_string();
            assert!(err.contains(reason), "{tag}={value}: {err}");
        }
        let event = with_tag(&keys, "ilp-endpoint", "ws://127.0.0.1:9/btp");
        assert!(validate(&event, true).is_ok());
    }

    #[test]
    fn screening_sets_aside_forged_foreign_and_other_slots() {
        let keys = Keys::generate();
        let good = fields().sign(&keys, NostrTimestamp::now());
        let mut forged = good.clone();
        forged.content = "{\"subscribers\": 1000000}".into();
        assert_eq!(
            screen(&forged, &keys.public_key()),
            Err(InvalidAnnouncement::Signature)
        );
        let other = Keys::generate();
        assert!(matches!(
            screen(&good, &other.public_key()),
            Err(InvalidAnnouncement::Author { .. })
        ));
        let wrong_d = with_tag(&keys, "d", "something-else");
        assert_eq!(
            screen(&wrong_d, &keys.public_key()),
            Err(InvalidAnnouncement::DTag(Some("something-else".into())))
        );
        let note = EventBuilder::text_note("hi").sign_with_keys(&keys).unwrap();
        assert_eq!(
            screen(&note, &keys.public_key()),
            Err(InvalidAnnouncement::Kind(1))
        );
    }

    #[test]
    fn address_classes_have_exact_edges() {
        let class = |ip: &str| ip_class(ip.parse().unwrap());
        for (ip, expected) in [
            ("172.15.255.255", None),
            ("172.16.0.0", Some(HostClass::Private)),
            ("172.31.255.255", Some(HostClass::Private)),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(HostClass::Shared)),
            ("100.127.255.255", Some(HostClass::Shared)),
            ("100.128.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.1", Some(HostClass::Reserved)),
            ("255.255.255.255", Some(HostClass::Reserved)),
            ("8.8.8.8", None),
            ("fbff::1", None),
            ("fc00::1", Some(HostClass::Private)),
            ("fdff::1", Some(HostClass::Private)),
            ("febf::1", Some(HostClass::LinkLocal)),
            ("fec0::1", Some(HostClass::Private)),
            ("ff02::1", Some(HostClass::Reserved)),
            ("::", Some(HostClass::Unspecified)),
            ("::ffff:10.1.2.3", Some(HostClass::Private)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::169.254.169.254", Some(HostClass::LinkLocal)),
            ("2001:db9::1", None),
            ("2a00:1450::1", None),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn announced_hosts_are_judged_unless_allowed() {
        let refused = check_announced_host("wss://10.0.0.1", false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "invalid announcement: ilp-endpoint: endpoint wss://10.0.0.1/ is a private address; \
             set nostr.allow_ws_loopback to allow it"
        );
        assert!(check_announced_host("wss://10.0.0.1", true).is_ok());
        assert!(matches!(
            check_announced_host("wss://api.localhost./btp", false),
            Err(InvalidAnnouncement::EndpointHost {
                class: HostClass::Loopback,
                ..
            })
        ));
        // Names are not resolved here.
        assert!(check_announced_host("wss://internal.example/btp", false).is_ok());
        // validate() applies it after the scheme check.
        let keys = Keys::generate();
        let event = with_tag(&keys, "ilp-endpoint", "wss://169.254.169.254/latest");
        assert!(matches!(
            validate(&event, false),
            Err(InvalidAnnouncement::EndpointHost {
                class: HostClass::LinkLocal,
                ..
            })
        ));
        assert!(validate(&event, true).is_ok());
    }

    #[test]
    fn newest_wins_then_lowest_id() {
        let keys = Keys::generate();
        let old = fields().sign(&keys, NostrTimestamp::from(100));
        let new = fields().sign(&keys, NostrTimestamp::from(200));
        assert_eq!(select_newest([&old, &new]).unwrap().id, new.id);
        assert_eq!(select_newest([&new, &old]).unwrap().id, new.id);
        let mut tie = fields();
        tie.endpoint = "wss://other.example".into();
        let tie = tie.sign(&keys, NostrTimestamp::from(200));
        let lowest = if tie.id < new.id { tie.id } else { new.id };
        assert_eq!(select_newest([&new, &tie]).unwrap().id, lowest);
        assert_eq!(select_newest([&tie, &new]).unwrap().id, lowest);
    }
}
