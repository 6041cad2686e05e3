//! What the node answers to its peers' requests, and how it asks them: every BTP Message
//! carrying an ILP Prepare goes to an [`IlpHandler`]; the node's own ([`NodeService`])
//! answers a BTP-NIPs PING with its PONG and `peer.config` with ILDCP, and hands the Nostr
//! messages (EVENT, REQ, CLOSE, NOTICE, EOSE) to its [`NostrMessages`] (the event flow).
//! [`send_prepare`] and [`send_btp_nips`] ask the peer at the other end of a link, from
//! either side of the session.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::connection::{error_packet, error_text, InFlight, Incoming, Link};
use super::ildcp::{self, IldcpInfo};
use super::{unix_now, PeerIdentity};
use crate::wire::btp::{Body, Packet, PROTOCOL_AUTH};
use crate::wire::btp_nips::{self, MessageType};
use crate::wire::ilp::{self, codes, Address, Prepare, Reject, Timestamp};

/// Answers one ILP Prepare from an authenticated peer with a Fulfill or a Reject. `link`
/// is the session it came over, for answers that go on (a subscription's events).
#[async_trait]
pub trait IlpHandler: Send + Sync {
    async fn handle_prepare(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        prepare: Prepare,
    ) -> ilp::Packet;
}

/// Serves the Nostr messages of BTP-NIPs: EVENT, REQ, CLOSE, NOTICE, EOSE (and OK, AUTH).
#[async_trait]
pub trait NostrMessages: Send + Sync {
    /// Answers one decoded packet from `from` with a Fulfill or a Reject.
    async fn handle(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        packet: btp_nips::Packet,
    ) -> ilp::Packet;
}

/// The node's own answers.
pub struct NodeService {
    own_address: Address,
    asset_code: String,
    asset_scale: u8,
    /// The event flow; without it (no operator relay) Nostr messages are rejected.
    nostr: Option<Arc<dyn NostrMessages>>,
}

impl NodeService {
    pub fn new(own_address: Address, asset_code: String, asset_scale: u8) -> Self {
        NodeService {
            own_address,
            asset_code,
            asset_scale,
            nostr: None,
        }
    }

    /// This service, handing Nostr messages to `nostr`.
    pub fn with_nostr(mut self, nostr: Arc<dyn NostrMessages>) -> Self {
        self.nostr = Some(nostr);
        self
    }

    fn reject(&self, code: [u8; 3], message: &str) -> ilp::Packet {
        ilp::Packet::Reject(Reject::new(code, Some(self.own_address.clone()), message))
    }

    /// The address a neighbour gets under ours: its pubkey prefix, or its username.
    fn child_address(&self, from: &PeerIdentity) -> Result<Address, String> {
        let segment = match from {
            PeerIdentity::Nostr(pk) => pk.to_hex()[..16].to_string(),
            PeerIdentity::SharedSecret(name) => name.clone(),
        };
        self.own_address
            .with_suffix(&segment)
            .map_err(|e| format!("no ILP address for `{segment}`: {e}"))
    }
}

#[async_trait]
impl IlpHandler for NodeService {
    async fn handle_prepare(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        prepare: Prepare,
    ) -> ilp::Packet {
        if ildcp::is_request(&prepare) {
            return match self.child_address(from) {
                Ok(client_address) => ilp::Packet::Fulfill(ildcp::response(&IldcpInfo {
                    client_address,
                    asset_scale: self.asset_scale,
                    asset_code: self.asset_code.clone(),
                })),
                Err(e) => self.reject(codes::F00_BAD_REQUEST, &e),
            };
        }
        if prepare.destination.as_str() != btp_nips::DESTINATION {
            return self.reject(
                codes::F02_UNREACHABLE,
                &format!("no route to {}", prepare.destination),
            );
        }
        if !prepare.is_peer_control() {
            return self.reject(
                codes::F00_BAD_REQUEST,
                "peer.btp-nips takes zero-amount control packets only",
            );
        }
        let packet = match btp_nips::Packet::decode(&prepare.data) {
            Ok(p) => p,
            Err(e) => return self.reject(codes::F01_INVALID_PACKET, &e.to_string()),
        };
        match packet.message_type {
            MessageType::Ping => {
                match btp_nips::Packet::pong(&packet, self.own_address.as_str(), unix_now())
                    .and_then(|pong| pong.to_fulfill())
                {
                    Ok(fulfill) => ilp::Packet::Fulfill(fulfill),
                    Err(e) => self.reject(codes::F01_INVALID_PACKET, &e.to_string()),
                }
            }
            MessageType::Pong => self.reject(
                codes::F00_BAD_REQUEST,
                "a PONG answers a PING; it is never a request",
            ),
            other => match &self.nostr {
                Some(nostr) => nostr.handle(from, link, packet).await,
                None => self.reject(
                    codes::F02_UNREACHABLE,
                    &format!(
                        "BTP-NIPs {other}: this node has no operator relay (events.operator_relay)"
                    ),
                ),
            },
        }
    }
}

/// Sends an ILP Prepare to the peer at the other end of `link`; resolves with its Fulfill
/// or Reject, or why there was none.
pub async fn send_prepare(link: &Link, prepare: &Prepare) -> Result<ilp::Packet, String> {
    let bytes = prepare.encode().map_err(|e| e.to_string())?;
    let answer = link
        .request(Packet::ilp_message(0, bytes))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(text) = error_text(&answer) {
        return Err(format!("BTP error: {text}"));
    }
    match answer.decode_ilp() {
        Ok(Some(packet @ (ilp::Packet::Fulfill(_) | ilp::Packet::Reject(_)))) => Ok(packet),
        Ok(Some(ilp::Packet::Prepare(_))) => Err("answer is a Prepare".into()),
        Ok(None) => Err("answer has no ilp entry".into()),
        Err(e) => Err(format!("answer: {e}")),
    }
}

/// Why a BTP-NIPs packet got no Fulfill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The packet does not fit in one ILP packet (refused, never cut).
    #[error("{0}")]
    TooLarge(String),
    /// The peer rejected it.
    #[error("rejected with {code}: {message}")]
    Rejected { code: String, message: String },
    /// No answer (timeout, closed session) or an unreadable one.
    #[error("{0}")]
    Failed(String),
}

/// Sends a BTP-NIPs packet as a zero-amount Prepare to `peer.btp-nips` over `link`, expiring
/// after `timeout`; resolves with the packet the Fulfill carried (`None` if it was empty).
pub async fn send_btp_nips(
    link: &Link,
    packet: &btp_nips::Packet,
    timeout: Duration,
) -> Result<Option<btp_nips::Packet>, SendError> {
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let expiry = Timestamp::now()
        .checked_add_millis(millis)
        .unwrap_or_else(Timestamp::now);
    let prepare = packet
        .to_prepare(expiry)
        .map_err(|e| SendError::TooLarge(e.to_string()))?;
    match send_prepare(link, &prepare)
        .await
        .map_err(SendError::Failed)?
    {
        ilp::Packet::Fulfill(f) if f.data.is_empty() => Ok(None),
        ilp::Packet::Fulfill(f) => btp_nips::Packet::decode(&f.data)
            .map(Some)
            .map_err(|e| SendError::Failed(format!("answer unreadable: {e}"))),
        ilp::Packet::Reject(r) => Err(SendError::Rejected {
            code: r.code_str().to_owned(),
            message: String::from_utf8_lossy(&r.message).into_owned(),
        }),
        ilp::Packet::Prepare(_) => Err(SendError::Failed("answered by a Prepare".into())),
    }
}

/// Handles one binary WebSocket message of an authenticated peer, on either side of the
/// session: an answer completes its request, a request is served in its own task (at most
/// `session.max_requests_in_flight` at once; more are refused), garbage is an error whose
/// text is the reason to disconnect. Before the link serves requests (a client whose server
/// has not proved its key yet) a request waits for that, or ends the session if it came
/// before the server even answered our auth.
pub async fn dispatch_binary(
    link: &Arc<Link>,
    handler: &Arc<dyn IlpHandler>,
    peer: &PeerIdentity,
    bytes: bytes::Bytes,
) -> Result<(), String> {
    match link.on_binary(bytes) {
        Ok(Incoming::Request(packet)) => {
            if !link.is_serving() {
                if link.awaits_answers() {
                    return Err("the peer sent a request before proving its key".into());
                }
                if !link.serving_allowed().await {
                    return Ok(());
                }
            }
            match link.begin_request() {
                Some(slot) => {
                    tokio::spawn(serve_request(
                        link.clone(),
                        handler.clone(),
                        peer.clone(),
                        packet,
                        slot,
                    ));
                }
                // Answered from the reader itself: while the queue is full it stops reading
                // the peer, which is the backpressure a peer that does not read gets.
                None => link.answer(&link.busy_refusal(packet.request_id)).await,
            }
            Ok(())
        }
        Ok(Incoming::Answered) => Ok(()),
        Ok(Incoming::Unexpected(id)) => {
            log::debug!("{peer}: answer to unknown request {id} dropped");
            Ok(())
        }
        Err(e) => Err(format!("peer sent an unreadable packet: {e}")),
    }
}

tokio::task_local! {
    /// What is to happen once the answer to the request being served is queued.
    static AFTER_ANSWER: std::cell::RefCell<Vec<Box<dyn FnOnce() + Send>>>;
}

/// Runs `then` once the answer to the request being served is queued, so that what it
/// sets off (a disconnection of the peer) comes after the answer, which then still reaches
/// the peer; outside a served request, at once.
pub fn after_answer(then: impl FnOnce() + Send + 'static) {
    let mut then: Option<Box<dyn FnOnce() + Send>> = Some(Box::new(then));
    let _ = AFTER_ANSWER.try_with(|later| later.borrow_mut().extend(then.take()));
    if let Some(now) = then {
        now();
    }
}

/// Serves one request of the peer (a Message or Transfer) and sends the answer.
pub async fn serve_request(
    link: Arc<Link>,
    handler: Arc<dyn IlpHandler>,
    from: PeerIdentity,
    packet: Packet,
    slot: InFlight,
) {
    let later = AFTER_ANSWER
        .scope(Default::default(), async move {
            answer_request(link, handler, from, packet, slot).await;
            AFTER_ANSWER.with(|later| later.take())
        })
        .await;
    for then in later {
        then();
    }
}

async fn answer_request(
    link: Arc<Link>,
    handler: Arc<dyn IlpHandler>,
    from: PeerIdentity,
    packet: Packet,
    slot: InFlight,
) {
    let id = packet.request_id;
    let answer = match &packet.body {
        Body::Transfer { .. } => error_packet(
            id,
            *b"F00",
            "NotAcceptedError",
            "BTP transfers are not accepted: settlement is on chain",
        ),
        _ => match packet.decode_ilp() {
            Ok(Some(ilp::Packet::Prepare(prepare))) => {
                let reply = handler.handle_prepare(&from, &link, prepare).await;
                match reply.encode() {
                    Ok(bytes) => Packet::ilp_response(id, bytes),
                    Err(e) => error_packet(id, *b"T00", "InternalError", &e.to_string()),
                }
            }
            Ok(Some(_)) => error_packet(
                id,
                *b"F00",
                "NotAcceptedError",
                "a request's ilp entry must be an ILP Prepare",
            ),
            Ok(None) if packet.primary_protocol() == Some(PROTOCOL_AUTH) => {
                error_packet(id, *b"F00", "NotAcceptedError", "already authenticated")
            }
            Ok(None) => error_packet(
                id,
                *b"F00",
                "NotAcceptedError",
                "no ilp entry: only ILP is spoken here",
            ),
            Err(e) => error_packet(id, *b"F01", "InvalidPacketError", &e.to_string()),
        },
    };
    link.answer(&answer).await;
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_served_request_what_follows_the_answer_runs_at_once() {
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = ran.clone();
        after_answer(move || seen.store(true, std::sync::atomic::Ordering::SeqCst));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    fn service() -> NodeService {
        NodeService::new(
            Address::new("g.btp-nips.a.0011223344556677").unwrap(),
            "msat".into(),
            3,
        )
    }

    fn expiry() -> Timestamp {
        Timestamp::now().checked_add_millis(30_000).unwrap()
    }

    #[tokio::test]
    async fn ping_is_answered_with_a_pong_echoing_the_nonce() {
        let ping = btp_nips::Packet::ping("g.btp-nips.b.8899aabbccddeeff", 1, "00000000000000ff");
        let prepare = ping.to_prepare(expiry()).unwrap();
        let from = PeerIdentity::SharedSecret("b".into());
        let (link, _out) = Link::new(Duration::from_secs(1));
        let ilp::Packet::Fulfill(f) = service().handle_prepare(&from, &link, prepare).await else {
            panic!("not fulfilled")
        };
        assert_eq!(f.fulfillment, ilp::PEER_PROTOCOL_FULFILLMENT);
        let pong = btp_nips::Packet::decode(&f.data).unwrap();
        assert_eq!(pong.message_type, MessageType::Pong);
        assert_eq!(pong.nonce(), Some("00000000000000ff"));
        assert_eq!(
            pong.payload.metadata.sender,
            "g.btp-nips.a.0011223344556677"
        );
    }

    #[tokio::test]
    async fn ildcp_gives_the_peer_an_address_under_ours_and_unknown_routes_are_rejected() {
        let from = PeerIdentity::SharedSecret("alice".into());
        let (link, _out) = Link::new(Duration::from_secs(1));
        let ilp::Packet::Fulfill(f) = service()
            .handle_prepare(&from, &link, ildcp::request(expiry()))
            .await
        else {
            panic!("not fulfilled")
        };
        let info = ildcp::parse_response(&f.data).unwrap();
        assert_eq!(
            info.client_address.as_str(),
            "g.btp-nips.a.0011223344556677.alice"
        );
        assert_eq!((info.asset_scale, info.asset_code.as_str()), (3, "msat"));

        let elsewhere =
            Prepare::peer_control(Address::new("g.somewhere").unwrap(), expiry(), vec![]);
        let ilp::Packet::Reject(r) = service().handle_prepare(&from, &link, elsewhere).await else {
            panic!("not rejected")
        };
        assert_eq!(r.code_str(), "F02");
        let garbage = Prepare::peer_control(
            Address::new(btp_nips::DESTINATION).unwrap(),
            expiry(),
            vec![1, 8, 0, 99],
        );
        let ilp::Packet::Reject(r) = service().handle_prepare(&from, &link, garbage).await else {
            panic!("not rejected")
        };
        assert_eq!(r.code_str(), "F01");
        assert!(String::from_utf8_lossy(&r.message).contains("payload length"));
    }
}
