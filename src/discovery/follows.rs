//! `FollowListMonitor`: a live subscription to the operator's kind 3 follow list on every
//! configured relay. It owns the list it last acted on and turns each newer list into
//! calls on the node's [`PeerDirectory`]: pubkeys new to the list are followed (connected
//! with follow priority), pubkeys gone from it are deliberately disconnected. An older (or the same) list arriving later, from a lagging relay or a
//! resubscription, is ignored: newest `created_at` wins, then the lowest id.
//!
//! On startup the monitor first waits for every relay's stored list (EOSE from all, or
//! `initial_wait`), then hands the newest to the node as one reconcile:
//! stored peers unfollowed while the node was down are disconnected, new follows added.
//! A relay that restarts is redialled by the SDK; the monitor sends its REQ again.
//!
//! A relay is not trusted with the subscription: events that are not the operator's kind 3
//! (or do not verify, or are not newer than what the same relay already sent) are ignored
//! before they reach the monitor, and counted in [`RelaySet::stats`]. Until its EOSE every
//! event a relay sends counts against the REQ's bounds (`nostr.max_events_per_req`,
//! `nostr.max_bytes_per_req`), afterwards every ignored one; a relay that spends them is
//! closed until it reconnects, and counts as having sent its stored list.

use std::collections::HashSet;
use std::time::Duration;

use actix::prelude::*;
use nostr_sdk::prelude::{
    ClientMessage, Event, Filter, Kind, PublicKey, Relay, RelayMessage, RelayNotification,
    RelayStatus, RelayUrl, SubscriptionId,
};
use tokio::sync::broadcast::error::RecvError;

use super::announcement::newer;
use super::bounds::{mismatch, Ignored, IgnoredTally, ReqBudget};
use super::relays::RelaySet;
use crate::ports::PeerDirectory;
use crate::untrusted::untrusted;

/// A kind 3 event arrived on the subscription.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
struct ListArrived(Event);

/// A relay has sent every stored event of the subscription.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
struct StoredListsSent(RelayUrl);

/// What the monitor currently acts on.
#[derive(Message, Debug, Clone)]
#[rtype(result = "FollowState")]
pub struct GetFollowState;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowState {
    /// The list acted on (id, created_at), if any yet.
    pub list: Option<(String, u64)>,
    pub followed: usize,
    /// Whether the startup reconcile has been sent.
    pub reconciled: bool,
    /// Lists ignored because a newer one was already acted on.
    pub ignored_older: u64,
}

pub struct FollowListMonitor {
    relays: RelaySet,
    operator: PublicKey,
    /// This node's own key: following it would connect the node to itself.
    own: Option<PublicKey>,
    directory: std::sync::Arc<dyn PeerDirectory>,
    subscription: SubscriptionId,
    initial_wait: Duration,
    /// The newest list seen; the one acted on once the startup phase is over.
    newest: Option<Event>,
    /// The followed set last handed to the node (`None` before the reconcile).
    acted: Option<HashSet<String>>,
    /// Startup phase over (every relay sent its stored list, or `initial_wait` passed).
    started_up: bool,
    eose_from: HashSet<RelayUrl>,
    ignored_older: u64,
}

impl FollowListMonitor {
    pub fn new(
        relays: RelaySet,
        operator: PublicKey,
        own: Option<PublicKey>,
        directory: std::sync::Arc<dyn PeerDirectory>,
        initial_wait: Duration,
    ) -> Self {
        FollowListMonitor {
            relays,
            operator,
            own,
            directory,
            subscription: SubscriptionId::generate(),
            initial_wait,
            newest: None,
            acted: None,
            started_up: false,
            eose_from: HashSet::new(),
            ignored_older: 0,
        }
    }

    /// The followed pubkeys of a list (hex), without our own key.
    fn followed_in(&self, list: &Event) -> HashSet<String> {
        list.tags
            .public_keys()
            .filter(|pk| Some(**pk) != self.own)
            .map(|pk| pk.to_hex())
            .collect()
    }

    fn end_startup(&mut self) {
        if self.started_up {
            return;
        }
        self.started_up = true;
        self.act();
    }

    /// Hands the newest list to the node: the whole set the first time, then diffs.
    fn act(&mut self) {
        let Some(list) = &self.newest else { return };
        let now = self.followed_in(list);
        match &self.acted {
            None => {
                log::info!(
                    "follow list {} ({} pubkeys): reconciling stored peers",
                    list.id,
                    now.len()
                );
                self.directory.reconcile(now.iter().cloned().collect());
            }
            Some(before) => {
                let added: Vec<&String> = now.difference(before).collect();
                let removed: Vec<&String> = before.difference(&now).collect();
                log::info!(
                    "follow list {}: {} followed, {} unfollowed",
                    list.id,
                    added.len(),
                    removed.len()
                );
                for pk in removed {
                    self.directory.unfollow(pk);
                }
                for pk in added {
                    self.directory.follow(pk);
                }
            }
        }
        self.acted = Some(now);
    }
}

impl Actor for FollowListMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let relays = self.relays.clone();
        let me = ctx.address();
        let id = self.subscription.clone();
        let filter = Filter::new().kind(Kind::ContactList).author(self.operator);
        ctx.spawn(actix::fut::wrap_future(async move {
            let all = relays.client().relays().await;
            let watchers = all
                .into_values()
                .map(|relay| watch_relay(relay, &relays, id.clone(), filter.clone(), me.clone()));
            futures::future::join_all(watchers).await;
        }));
        ctx.run_later(self.initial_wait, |act, _| act.end_startup());
    }
}

/// Keeps the subscription open on one relay: sends the REQ now if connected and again on
/// every reconnect (a restarted relay has forgotten it; the SDK's own resubscription
/// compares whole seconds and skips a reconnect within the second of the subscription),
/// and forwards what the relay sends for it that is the operator's list (see the module
/// documentation for what is ignored and how the relay is bounded).
async fn watch_relay(
    relay: Relay,
    relays: &RelaySet,
    id: SubscriptionId,
    filter: Filter,
    me: Addr<FollowListMonitor>,
) {
    let url = relay.url().clone();
    let stats = relays.stats();
    // Listen before subscribing, so no stored list is missed.
    let mut notifications = relay.notifications();
    let mut sub = Subscription::new(relays);
    let subscribe = |relay: &Relay, sub: &mut Subscription| {
        sub.resubscribed();
        if let Err(e) = relay.send_msg(ClientMessage::req(id.clone(), vec![filter.clone()])) {
            log::warn!("follow monitor: REQ to {url} not sent: {e}");
        }
    };
    if relay.is_connected() {
        subscribe(&relay, &mut sub);
    }
    loop {
        match notifications.recv().await {
            Ok(RelayNotification::Message { message }) => match message {
                RelayMessage::Event {
                    subscription_id,
                    event,
                } if *subscription_id == id => {
                    if sub.cut {
                        continue;
                    }
                    let why = mismatch(&filter, &event)
                        .or_else(|| event.verify().is_err().then_some(Ignored::Signature))
                        .or_else(|| {
                            sub.newest
                                .as_ref()
                                .is_some_and(|n| !newer(&event, n))
                                .then_some(Ignored::Stale)
                        });
                    // Stored events all count; live ones only when ignored (an honest relay
                    // sends each newer list once).
                    if !sub.stored_sent || why.is_some() {
                        if let Err(cut) = sub.budget.take(&event) {
                            stats.count_cut(&cut);
                            sub.cut = true;
                            let _ = relay.send_msg(ClientMessage::close(id.clone()));
                            log::warn!(
                                "follow monitor: {url} sent {cut}{}; subscription closed until \
                                 it reconnects",
                                sub.tally_note()
                            );
                            if !sub.stored_sent {
                                me.do_send(StoredListsSent(url.clone()));
                            }
                            continue;
                        }
                    }
                    match why {
                        Some(why) => {
                            stats.count_ignored(why);
                            sub.ignored.add(why);
                            if sub.stored_sent && sub.ignored.total() == 1 {
                                log::warn!(
                                    "follow monitor: {url} sent event {} ({}): ignored, and \
                                     so are further ones (counted)",
                                    event.id,
                                    why.name()
                                );
                            }
                        }
                        None => {
                            let event = event.into_owned();
                            sub.newest = Some(event.clone());
                            me.do_send(ListArrived(event));
                        }
                    }
                }
                RelayMessage::EndOfStoredEvents(sid)
                    if *sid == id && !sub.cut && !sub.stored_sent =>
                {
                    sub.stored_sent = true;
                    if sub.ignored.total() > 0 {
                        log::warn!(
                            "follow monitor: {url} sent events that are not the operator's \
                             newer follow list{}",
                            sub.tally_note()
                        );
                        sub.ignored = IgnoredTally::default();
                    }
                    me.do_send(StoredListsSent(url.clone()));
                }
                RelayMessage::Closed {
                    subscription_id,
                    message,
                } if *subscription_id == id => log::warn!(
                    "follow monitor: {url} closed the subscription: {}",
                    untrusted(&message)
                ),
                _ => {}
            },
            Ok(RelayNotification::RelayStatus {
                status: RelayStatus::Connected,
            }) => {
                // A new connection: the relay gets its bounds afresh.
                sub = Subscription::new(relays);
                subscribe(&relay, &mut sub);
            }
            Ok(RelayNotification::Shutdown) | Err(RecvError::Closed) => break,
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                if sub.cut {
                    continue;
                }
                log::warn!("follow monitor: {n} messages from {url} lost; asking again");
                subscribe(&relay, &mut sub);
            }
        }
    }
}

/// One relay's follow-list subscription, on one connection.
struct Subscription {
    /// What the relay may still send; kept across REQs sent again on the same connection,
    /// so a relay cannot earn a fresh budget by making the monitor fall behind.
    budget: ReqBudget,
    /// The bounds were spent: the subscription is closed until the relay reconnects.
    cut: bool,
    /// EOSE arrived for the current REQ.
    stored_sent: bool,
    /// The newest list the relay sent for the current REQ.
    newest: Option<Event>,
    /// Ignored events not yet logged.
    ignored: IgnoredTally,
}

impl Subscription {
    fn new(relays: &RelaySet) -> Self {
        Subscription {
            budget: ReqBudget::new(relays.bounds()),
            cut: false,
            stored_sent: false,
            newest: None,
            ignored: IgnoredTally::default(),
        }
    }

    /// The REQ is sent (again): the relay sends its stored list anew.
    fn resubscribed(&mut self) {
        self.stored_sent = false;
        self.newest = None;
    }

    fn tally_note(&self) -> String {
        if self.ignored.total() == 0 {
            String::new()
        } else {
            format!(" (ignored: {})", self.ignored)
        }
    }
}

impl Handler<ListArrived> for FollowListMonitor {
    type Result = ();
    fn handle(&mut self, ListArrived(event): ListArrived, _: &mut Self::Context) {
        if event.pubkey != self.operator
            || event.kind != Kind::ContactList
            || event.verify().is_err()
        {
            log::warn!(
                "follow monitor: ignoring event {} (not the operator's kind 3)",
                event.id
            );
            return;
        }
        match &self.newest {
            Some(current) if !newer(&event, current) => {
                if event.id != current.id {
                    self.ignored_older += 1;
                    log::info!(
                        "follow list {} (created_at {}) is older than {}: ignored",
                        event.id,
                        event.created_at,
                        current.id
                    );
                }
                return;
            }
            _ => {}
        }
        self.newest = Some(event);
        if self.started_up {
            self.act();
        }
    }
}

impl Handler<StoredListsSent> for FollowListMonitor {
    type Result = ();
    fn handle(&mut self, StoredListsSent(url): StoredListsSent, _: &mut Self::Context) {
        self.eose_from.insert(url);
        if self.eose_from.len() >= self.relays.urls().len() {
            self.end_startup();
        }
    }
}

impl Handler<GetFollowState> for FollowListMonitor {
    type Result = MessageResult<GetFollowState>;
    fn handle(&mut self, _: GetFollowState, _: &mut Self::Context) -> Self::Result {
        MessageResult(FollowState {
            list: self
                .acted
                .as_ref()
                .and(self.newest.as_ref())
                .map(|e| (e.id.to_hex(), e.created_at.as_secs())),
            followed: self.acted.as_ref().map_or(0, HashSet::len),
            reconciled: self.acted.is_some(),
            ignored_older: self.ignored_older,
        })
    }
}
