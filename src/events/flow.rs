//! [`EventFlow`]: the event flow of the node, in both directions.
//!
//! - As the node's [`Subscriptions`] port: when a peer is connected, its actor asks for the
//!   initial REQ — the peer's own events since its cursor — sent over the peer's session;
//!   when the session closes, the CLOSE.
//! - As the session service's [`NostrMessages`]: an EVENT for one of our subscriptions is
//!   checked ([`super::inbox`]) and published to the operator's relay; then the peer's
//!   lifecycle hears of it (its cursor moves, and is persisted). A forged or non-matching
//!   EVENT is refused and the peer is failed with the reason (it needs a person). A REQ or
//!   CLOSE from a peer goes to [`super::serve`].
//!
//! An EVENT created too far ahead of the node's clock (`events.max_future_seconds`) is
//! answered `OK false` with the reason and not published; it does not move the cursor and
//! the peer's flow goes on (its clock may be wrong; that is no protocol breach). The clock
//! is the flow's own ([`EventFlow::with_clock`]), so tests can set it.
//!
//! If the operator's relay cannot take an event now, the EVENT is refused with a temporary
//! error and the peer's session is dropped (reconnected with backoff): the REQ sent on the
//! next connection resumes from the cursor, so nothing is skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nostr::{Event as NostrEvent, PublicKey};

use super::inbox::{Accepted, Inbox, InboxLimits, Refusal, Ticket};
use super::messages::{ok_packet, NostrMessage};
use super::serve::{ServeSettings, ServeStats, Serving};
use super::{OperatorStore, StoreError};
use crate::config::EventSettings;
use crate::lifecycle::{Event, Fault};
use crate::ports::{PeerDirectory, PeerTarget, Session, Subscriptions};
use crate::session::connection::Link;
use crate::session::service::after_answer;
use crate::session::{unix_now, NostrMessages, PeerIdentity};
use crate::wire::btp_nips::{self, MessageType};
use crate::wire::ilp::{self, codes, Address, Fulfill, Reject};

/// What the flow has done, for logs, tests and the benchmark.
#[derive(Debug, Default)]
pub struct FlowStats {
    /// Events received from peers and published to the operator's relay.
    pub published: AtomicU64,
    /// Events received again at the cursor's second (answered, not published twice).
    pub already_received: AtomicU64,
    /// Events refused as forged or not matching.
    pub refused: AtomicU64,
    /// NOTICEs received from peers.
    pub notices: AtomicU64,
    /// EOSEs received from peers.
    pub eose: AtomicU64,
    /// Events refused as created too far in the future (`events.max_future_seconds`).
    pub future_dated: AtomicU64,
}

/// The flow's clock: Unix seconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The node's event flow.
pub struct EventFlow {
    store: Arc<dyn OperatorStore>,
    inbox: Inbox,
    serving: Serving,
    own_address: Address,
    /// Where observations about peers go (events received, misbehaviour).
    directory: Arc<dyn PeerDirectory>,
    /// What time it is, for the checks that depend on it.
    clock: Clock,
    pub stats: Arc<FlowStats>,
    /// The connection behind `store` when it is the operator's relay (its status for the
    /// operator); `None` for a store a test gave.
    relay: Option<super::relay::OperatorRelay>,
}

impl EventFlow {
    /// The flow over `store`, sending as `own_address`, telling `directory` what it
    /// observes about peers; each request waits `request_timeout` for its answer.
    pub fn new(
        store: Arc<dyn OperatorStore>,
        settings: &EventSettings,
        own_address: Address,
        request_timeout: Duration,
        directory: Arc<dyn PeerDirectory>,
    ) -> EventFlow {
        let serving = Serving::new(
            store.clone(),
            ServeSettings::from_settings(settings, request_timeout, own_address.as_str()),
        );
        EventFlow {
            store,
            inbox: Inbox::new(InboxLimits {
                max_future_seconds: settings.max_future_seconds,
                max_cursor_ids: settings.max_cursor_ids,
            }),
            serving,
            own_address,
            directory,
            clock: Arc::new(unix_now),
            stats: Arc::default(),
            relay: None,
        }
    }

    /// The same flow reading the time from `clock` (Unix seconds) instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> EventFlow {
        self.clock = clock;
        self
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The flow of a node configured by `settings`: `None` when no operator relay is set.
    /// Connects to the relay in the background (a relay down now is redialled).
    pub async fn from_settings(
        settings: &crate::config::Settings,
        own_address: Address,
        directory: Arc<dyn PeerDirectory>,
    ) -> Result<Option<Arc<EventFlow>>, super::relay::OperatorRelayError> {
        let url = settings.events.operator_relay.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let n = &settings.nostr;
        let tuning = crate::discovery::relays::RelayTuning {
            query_timeout: n.query_timeout,
            connect_timeout: n.connect_timeout,
            retry_interval: n.retry_interval,
            // Live subscriptions of every peer share the connection's buffer.
            notification_capacity: crate::discovery::relays::RelayTuning::capacity_for(
                settings.events.max_subscriptions_per_peer,
                settings.events.stored_page_size,
            ),
        };
        let relay = super::relay::OperatorRelay::connect(url, tuning).await?;
        log::info!("event flow through the operator's relay {}", relay.url());
        let request_timeout = settings.session.request_timeout;
        let mut flow = EventFlow::new(
            Arc::new(relay.clone()),
            &settings.events,
            own_address,
            request_timeout,
            directory,
        );
        flow.relay = Some(relay);
        Ok(Some(Arc::new(flow)))
    }

    /// The operator's relay this flow moves events through, when it was built from the
    /// settings.
    pub fn operator_relay(&self) -> Option<&super::relay::OperatorRelay> {
        self.relay.as_ref()
    }

    /// Counters of the serving side.
    pub fn serve_stats(&self) -> &Arc<ServeStats> {
        &self.serving.stats
    }

    /// Open subscriptions a peer holds here.
    pub fn served_subscriptions(&self, peer: &PeerIdentity) -> usize {
        self.serving.open_count(peer)
    }

    /// Live REQs the peers' subscriptions hold on the operator's relay now.
    pub fn served_live_reqs(&self) -> usize {
        self.serving.live_reqs()
    }

    /// Stops serving every subscription.
    pub fn stop(&self) {
        self.serving.stop_all();
    }

    fn observe(&self, pubkey: &str, event: Event) {
        self.directory.observe(pubkey, event);
    }

    fn packet(&self, message: NostrMessage) -> btp_nips::Packet {
        message.to_packet(self.own_address.as_str(), self.now())
    }

    fn fulfill(&self, answer: Option<btp_nips::Packet>) -> ilp::Packet {
        let data = match answer.map(|p| p.encode()) {
            None => Vec::new(),
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return self.reject(codes::T00_INTERNAL_ERROR, &e.to_string()),
        };
        ilp::Packet::Fulfill(Fulfill::peer_control(data))
    }

    fn reject(&self, code: [u8; 3], message: &str) -> ilp::Packet {
        ilp::Packet::Reject(Reject::new(code, Some(self.own_address.clone()), message))
    }

    /// An EVENT from `from` for our subscription `sub`.
    async fn on_event(&self, from: &PeerIdentity, sub: &str, event: NostrEvent) -> ilp::Packet {
        let PeerIdentity::Nostr(pk) = from else {
            return self.reject(
                codes::F00_BAD_REQUEST,
                &format!("this node holds no subscription toward {from}"),
            );
        };
        let pubkey = pk.to_hex();
        let event_id = event.id;
        match self.inbox.check(&pubkey, sub, event, self.now()) {
            Err(refusal @ Refusal::FutureDated { .. }) => {
                // Answered, not published: the cursor stays, the flow goes on.
                self.stats.future_dated.fetch_add(1, Ordering::Relaxed);
                log::warn!("peer {pubkey}: {refusal}; not published");
                let ok = ok_packet(
                    &event_id,
                    false,
                    &format!("invalid: {refusal}"),
                    self.own_address.as_str(),
                    self.now(),
                );
                self.fulfill(Some(ok))
            }
            Err(refusal) => {
                if refusal.is_misbehaviour() {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    log::warn!("peer {pubkey}: {refusal}; disconnecting it");
                    // Once the refusal is on its way: the peer learns why before the close.
                    let (directory, why) = (self.directory.clone(), refusal.to_string());
                    let pubkey = pubkey.clone();
                    after_answer(move || directory.observe(&pubkey, Event::Misbehaved(why)));
                }
                self.reject(codes::F00_BAD_REQUEST, &refusal.to_string())
            }
            Ok(Accepted::AlreadyReceived) => {
                self.stats.already_received.fetch_add(1, Ordering::Relaxed);
                let ok = ok_packet(
                    &event_id,
                    true,
                    "duplicate: already received",
                    self.own_address.as_str(),
                    self.now(),
                );
                self.fulfill(Some(ok))
            }
            Ok(Accepted::New(ticket, event)) => match self.store.publish(&event).await {
                Ok(()) => {
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                    self.received(&pubkey, sub, ticket);
                    let ok = ok_packet(&event_id, true, "", self.own_address.as_str(), self.now());
                    self.fulfill(Some(ok))
                }
                Err(StoreError::Refused(why)) => {
                    // The operator's relay will never take it: move on past it.
                    log::warn!(
                        "peer {pubkey}: event {event_id} refused by the operator's relay: {why}"
                    );
                    self.received(&pubkey, sub, ticket);
                    let ok = ok_packet(
                        &event_id,
                        false,
                        &why,
                        self.own_address.as_str(),
                        self.now(),
                    );
                    self.fulfill(Some(ok))
                }
                Err(StoreError::Unavailable(why)) => {
                    let reason = format!("operator relay unavailable: {why}");
                    log::warn!("peer {pubkey}: {reason}; the session is dropped and resumed later");
                    self.observe(&pubkey, Event::LocalFault(reason.clone()));
                    self.reject(codes::T00_INTERNAL_ERROR, &reason)
                }
            },
        }
    }

    /// Moves the cursor (in the order the events arrived, see [`Inbox::received`]); the
    /// peer's lifecycle hears of each event that moved it, so the cursor it keeps stays as
    /// bounded as the inbox's.
    fn received(&self, pubkey: &str, sub: &str, ticket: Ticket) {
        for (created_at, id) in self.inbox.received(pubkey, sub, ticket) {
            self.observe(pubkey, Event::EventReceived { created_at, id });
        }
    }
}

#[async_trait]
impl Subscriptions for EventFlow {
    async fn subscribe(
        &self,
        peer: &PeerTarget,
        session: Arc<dyn Session>,
    ) -> Result<Vec<String>, Fault> {
        let pk = PublicKey::from_hex(&peer.nostr_pubkey)
            .map_err(|e| Fault::Permanent(format!("peer key {:?}: {e}", peer.nostr_pubkey)))?;
        // What the serving side learns of whom this node follows.
        self.serving.set_followed(&pk, peer.followed);
        let (id, filter) = self.inbox.open(&pk, peer.event_cursor.as_ref());
        let req = self.packet(NostrMessage::Req {
            id: id.clone(),
            filters: vec![filter],
        });
        let refused = |why: String| {
            self.inbox.close(&peer.nostr_pubkey, &id);
            Err(Fault::Transient(why))
        };
        match session.send(req).await {
            Ok(None) => {
                log::info!(
                    "peer {}: subscribed ({id}) to its events since {}",
                    peer.nostr_pubkey,
                    peer.event_cursor.as_ref().map_or(0, |c| c.created_at)
                );
                Ok(vec![id])
            }
            Ok(Some(answer)) if answer.message_type == MessageType::Notice => {
                let text = match NostrMessage::read(&answer) {
                    Ok(NostrMessage::Notice { message }) => message,
                    _ => answer.payload.nostr.to_string(),
                };
                refused(format!("the peer refused our REQ: {text}"))
            }
            Ok(Some(answer)) => refused(format!("REQ answered with {}", answer.message_type)),
            Err(fault) => refused(format!("REQ: {}", fault.reason())),
        }
    }

    async fn unsubscribe(
        &self,
        peer: &PeerTarget,
        session: Arc<dyn Session>,
        subscription_ids: &[String],
    ) {
        for id in subscription_ids {
            self.inbox.close(&peer.nostr_pubkey, id);
            let close = self.packet(NostrMessage::Close { id: id.clone() });
            if let Err(e) = session.send(close).await {
                log::debug!(
                    "peer {}: CLOSE {id} not delivered: {}",
                    peer.nostr_pubkey,
                    e.reason()
                );
            }
        }
    }
}

#[async_trait]
impl NostrMessages for EventFlow {
    async fn handle(
        &self,
        from: &PeerIdentity,
        link: &Arc<Link>,
        packet: btp_nips::Packet,
    ) -> ilp::Packet {
        let message = match NostrMessage::read(&packet) {
            Ok(m) => m,
            Err(e) => return self.reject(codes::F01_INVALID_PACKET, &e.to_string()),
        };
        match message {
            NostrMessage::Req { id, filters } => {
                match self.serving.request(from, link, id, filters) {
                    Ok(()) => self.fulfill(None),
                    Err(notice) => {
                        log::info!("{from}: {notice}");
                        let notice = self.packet(NostrMessage::Notice { message: notice });
                        self.fulfill(Some(notice))
                    }
                }
            }
            NostrMessage::Close { id } => {
                self.serving.close(from, &id);
                self.fulfill(None)
            }
            NostrMessage::Event { id, event } => self.on_event(from, &id, *event).await,
            NostrMessage::Eose { id } => {
                self.stats.eose.fetch_add(1, Ordering::Relaxed);
                if let PeerIdentity::Nostr(pk) = from {
                    if self.inbox.stored_done(&pk.to_hex(), &id) {
                        log::info!("{from}: stored events of subscription {id} all received");
                    }
                }
                self.fulfill(None)
            }
            NostrMessage::Notice { message } => {
                self.stats.notices.fetch_add(1, Ordering::Relaxed);
                log::warn!("{from}: NOTICE: {message}");
                self.fulfill(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use futures::stream::BoxStream;
    use nostr::{EventBuilder, EventId, Filter, Keys};

    use super::*;
    use crate::events::VerifiedEvent;
    use crate::ports::Admission;
    use crate::session::connection::Outgoing;
    use crate::session::service::{serve_request, IlpHandler, NodeService};
    use crate::wire::btp;

    /// An operator relay that is never reached: a refused event goes nowhere.
    struct Unreached;

    #[async_trait]
    impl OperatorStore for Unreached {
        async fn publish(&self, _: &VerifiedEvent) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("not in this test".into()))
        }
        async fn stored_ids(
            &self,
            _: Filter,
            _: usize,
            _: usize,
        ) -> Result<(Vec<(u64, EventId)>, bool), StoreError> {
            Err(StoreError::Unavailable("not in this test".into()))
        }
        async fn events(&self, _: &[EventId]) -> Result<Vec<NostrEvent>, StoreError> {
            Err(StoreError::Unavailable("not in this test".into()))
        }
        async fn live(
            &self,
            _: Filter,
        ) -> Result<BoxStream<'static, Result<NostrEvent, StoreError>>, StoreError> {
            Err(StoreError::Unavailable("not in this test".into()))
        }
    }

    /// Closes the peer's session as soon as it is told of misbehaviour: the fastest the
    /// node's actors could.
    #[derive(Default)]
    struct ClosesAtOnce(OnceLock<Arc<Link>>);

    #[async_trait]
    impl PeerDirectory for ClosesAtOnce {
        async fn admit(&self, _: &str) -> Admission {
            Admission::Refused {
                reason: "not in this test".into(),
            }
        }
        fn observe(&self, _: &str, event: Event) {
            if let (Event::Misbehaved(why), Some(link)) = (event, self.0.get()) {
                link.shut(why);
            }
        }
        fn follow(&self, _: &str) {}
        fn unfollow(&self, _: &str) {}
        fn reconcile(&self, _: Vec<String>) {}
    }

    #[tokio::test]
    async fn a_refused_event_reaches_the_peer_before_the_close_it_sets_off() {
        let peer = Keys::generate();
        let address = Address::new("g.btp-nips.test.0011223344556677").unwrap();
        let directory = Arc::new(ClosesAtOnce::default());
        let flow = EventFlow::new(
            Arc::new(Unreached),
            &crate::config::Settings::defaults().unwrap().events,
            address.clone(),
            Duration::from_secs(5),
            directory.clone(),
        );
        let (subscription, _) = flow.inbox.open(&peer.public_key(), None);
        let (link, mut out) = Link::new(Duration::from_secs(5));
        directory.0.set(link.clone()).ok().unwrap();
        let service: Arc<dyn IlpHandler> =
            Arc::new(NodeService::new(address, "msat".into(), 0).with_nostr(Arc::new(flow)));

        // An EVENT for the peer's subscription by an author it was not asked for.
        let stranger = EventBuilder::text_note("not the peer's")
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let message = NostrMessage::Event {
            id: subscription,
            event: Box::new(stranger),
        };
        let expires = ilp::Timestamp::from_unix_millis(unix_now() as i64 * 1000 + 30_000).unwrap();
        let prepare = message
            .to_packet("g.btp-nips.peer", unix_now())
            .to_prepare(expires)
            .unwrap();
        let request = btp::Packet::ilp_message(7, ilp::Packet::Prepare(prepare).encode().unwrap());
        let slot = link.begin_request().unwrap();
        serve_request(
            link.clone(),
            service,
            PeerIdentity::Nostr(peer.public_key()),
            request,
            slot,
        )
        .await;

        let Some(Outgoing::Packet(bytes)) = out.recv().await else {
            panic!("the answer goes out first");
        };
        let answer = btp::Packet::decode(&bytes).unwrap();
        assert_eq!(answer.request_id, 7);
        let Ok(Some(ilp::Packet::Reject(reject))) = answer.decode_ilp() else {
            panic!("a Reject: {answer:?}");
        };
        let why = String::from_utf8_lossy(&reject.message).into_owned();
        assert_eq!(reject.code_str(), "F00");
        assert!(why.contains("was not asked for"), "{why}");
        match out.recv().await {
            Some(Outgoing::Close(reason)) => assert!(reason.contains("was not asked for")),
            other => panic!("then the close: {other:?}"),
        }
    }
}
