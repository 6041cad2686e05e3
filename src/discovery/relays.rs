//! The configured Nostr relays, through one nostr-sdk `Client`. One thing the SDK does not
//! say is whether a relay *answered*: its `fetch_events` ends the same way on EOSE and on a
//! timeout. Discovery needs the difference ("every relay answered and none has it" is not
//! "no relay answered"), so [`RelaySet::query`] sends its own REQ to each relay and watches
//! that relay's messages for EOSE (answered), CLOSED (refused) or silence (not answered).
//!
//! What a relay sends for a query is not taken on trust: events that do not match the
//! query's filter are ignored (never kept), and a relay that sends more than the REQ's
//! bounds allow (see [`super::bounds`]) is cut off and counts as not answered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use nostr_sdk::pool::transport::websocket::{DefaultWebsocketTransport, IntoWebSocketTransport};
use nostr_sdk::prelude::{
    Client, ClientMessage, Event, Filter, Keys, Relay, RelayMessage, RelayNotification,
    RelayOptions, RelayStatus, RelayUrl, SubscriptionId,
};
use tokio::sync::broadcast::error::RecvError;

use super::bounds::{mismatch, Ignored, IgnoredTally, RelayStats, ReqBounds, ReqBudget};
use crate::untrusted::untrusted;

/// How one relay took one REQ.
#[derive(Debug, Clone)]
pub struct RelayAnswer {
    pub url: RelayUrl,
    /// EOSE arrived: the events below are everything the relay had (up to the limit).
    pub answered: bool,
    /// Why the relay did not answer (disconnected, timeout, CLOSED, cut off by a bound, …).
    pub problem: Option<String>,
    /// The events that match the filter (each once); the others were ignored.
    pub events: Vec<Event>,
    /// How many events were ignored (see [`RelayStats`] for the reasons).
    pub ignored: usize,
}

/// How the relay connections behave.
#[derive(Debug, Clone, Copy)]
pub struct RelayTuning {
    /// How long a REQ waits for EOSE.
    pub query_timeout: Duration,
    /// How long a query waits for a disconnected relay to come back before giving up on it.
    pub connect_timeout: Duration,
    /// How often a lost relay is redialled (the SDK also resubscribes live subscriptions).
    pub retry_interval: Duration,
    /// Messages a relay connection buffers for each listener. A listener that falls
    /// further behind loses messages (its query then counts as unanswered): size it for
    /// the events of all parallel REQs (the SDK sends two notifications per new event).
    pub notification_capacity: usize,
}

impl RelayTuning {
    /// A buffer for `parallel_reqs` REQs of up to `events_per_req` events each, with room.
    pub fn capacity_for(parallel_reqs: usize, events_per_req: usize) -> usize {
        (parallel_reqs * events_per_req * 4).max(4096)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay URL {url:?}: {reason}")]
    Url { url: String, reason: String },
}

/// The node's relays.
#[derive(Clone)]
pub struct RelaySet {
    client: Client,
    urls: Vec<RelayUrl>,
    tuning: RelayTuning,
    bounds: ReqBounds,
    stats: Arc<RelayStats>,
}

impl RelaySet {
    /// Adds every relay and starts connecting (in the background: a relay that is down now
    /// is redialled every `retry_interval`).
    pub async fn connect(
        keys: Keys,
        urls: &[String],
        tuning: RelayTuning,
    ) -> Result<RelaySet, RelayError> {
        Self::connect_with_transport(keys, urls, tuning, DefaultWebsocketTransport).await
    }

    /// [`RelaySet::connect`], the connections made by `transport` (nostr-sdk's
    /// `WebSocketTransport` hook).
    pub async fn connect_with_transport(
        keys: Keys,
        urls: &[String],
        tuning: RelayTuning,
        transport: impl IntoWebSocketTransport,
    ) -> Result<RelaySet, RelayError> {
        let client = Client::builder()
            .signer(keys)
            .websocket_transport(transport)
            .build();
        let mut parsed = Vec::new();
        for url in urls {
            let relay_url = RelayUrl::parse(url).map_err(|e| RelayError::Url {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            let opts = RelayOptions::default()
                .retry_interval(tuning.retry_interval)
                .adjust_retry_interval(false)
                .notification_channel_size(tuning.notification_capacity);
            client
                .pool()
                .add_relay(relay_url.clone(), opts)
                .await
                .map_err(|e| RelayError::Url {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            parsed.push(relay_url);
        }
        client.connect().await;
        Ok(RelaySet {
            client,
            urls: parsed,
            tuning,
            bounds: ReqBounds::default(),
            stats: Arc::default(),
        })
    }

    /// The same relays with `bounds` on what one relay may send for one REQ (the defaults
    /// of `nostr.max_events_per_req` and `nostr.max_bytes_per_req` until set).
    pub fn with_bounds(mut self, bounds: ReqBounds) -> Self {
        self.bounds = bounds;
        self
    }

    pub fn bounds(&self) -> ReqBounds {
        self.bounds
    }

    /// What the relays sent that was ignored or cut off, across every clone of this set.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn urls(&self) -> &[RelayUrl] {
        &self.urls
    }

    pub fn tuning(&self) -> RelayTuning {
        self.tuning
    }

    /// Waits (up to `timeout`) until every relay is connected; returns how many are.
    pub async fn wait_connected(&self, timeout: Duration) -> usize {
        self.client.wait_for_connection(timeout).await;
        let relays = self.client.relays().await;
        relays.values().filter(|r| r.is_connected()).count()
    }

    /// Each configured relay's URL and whether it is connected now, in configuration order.
    pub async fn connections(&self) -> Vec<(String, bool)> {
        let relays = self.client.relays().await;
        self.urls
            .iter()
            .map(|url| {
                let up = relays.get(url).is_some_and(|r| r.is_connected());
                (url.to_string(), up)
            })
            .collect()
    }

    /// Sends `filter` as one REQ to every relay at once.
    pub async fn query(&self, filter: Filter) -> Vec<RelayAnswer> {
        let relays = self.client.relays().await;
        let asks = self.urls.iter().map(|url| {
            let relay = relays.get(url).cloned();
            let filter = filter.clone();
            async move {
                match relay {
                    Some(relay) => self.query_one(relay, filter).await,
                    None => RelayAnswer {
                        url: url.clone(),
                        answered: false,
                        problem: Some("relay was removed".into()),
                        events: Vec::new(),
                        ignored: 0,
                    },
                }
            }
        });
        join_all(asks).await
    }

    async fn query_one(&self, relay: Relay, filter: Filter) -> RelayAnswer {
        let url = relay.url().clone();
        let unanswered = |problem: String, events, ignored| RelayAnswer {
            url: url.clone(),
            answered: false,
            problem: Some(problem),
            events,
            ignored,
        };
        if !relay.is_connected() {
            relay.wait_for_connection(self.tuning.connect_timeout).await;
            if !relay.is_connected() {
                return unanswered(format!("{url}: not connected"), Vec::new(), 0);
            }
        }
        let mut messages = relay.notifications();
        let id = SubscriptionId::generate();
        if let Err(e) = relay.send_msg(ClientMessage::req(id.clone(), vec![filter.clone()])) {
            return unanswered(format!("{url}: REQ not sent: {e}"), Vec::new(), 0);
        }
        let mut events = Vec::new();
        let mut kept = HashSet::new();
        let mut ignored = IgnoredTally::default();
        let mut budget = ReqBudget::new(self.bounds);
        let wait = async {
            loop {
                match messages.recv().await {
                    Ok(RelayNotification::Message { message }) => match message {
                        RelayMessage::Event {
                            subscription_id,
                            event,
                        } if *subscription_id == id => {
                            if let Err(cut) = budget.take(&event) {
                                self.stats.count_cut(&cut);
                                let problem = format!("{url}: answer cut off: it sent {cut}");
                                log::warn!("{problem}; the lookup ends with what it has");
                                return Err(problem);
                            }
                            let why = mismatch(&filter, &event)
                                .or_else(|| (!kept.insert(event.id)).then_some(Ignored::Duplicate));
                            match why {
                                Some(why) => {
                                    self.stats.count_ignored(why);
                                    ignored.add(why);
                                }
                                None => events.push(event.into_owned()),
                            }
                        }
                        RelayMessage::EndOfStoredEvents(sid) if *sid == id => return Ok(()),
                        RelayMessage::Closed {
                            subscription_id,
                            message,
                        } if *subscription_id == id => {
                            return Err(format!("{url}: CLOSED: {}", untrusted(&message)));
                        }
                        _ => {}
                    },
                    Ok(RelayNotification::RelayStatus {
                        status:
                            RelayStatus::Disconnected | RelayStatus::Terminated | RelayStatus::Banned,
                    }) => {
                        return Err(format!("{url}: disconnected during the query"));
                    }
                    Ok(RelayNotification::Shutdown) => return Err(format!("{url}: shut down")),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        return Err(format!("{url}: {n} messages lost while reading the answer"));
                    }
                    Err(RecvError::Closed) => return Err(format!("{url}: connection gone")),
                }
            }
        };
        let outcome = tokio::time::timeout(self.tuning.query_timeout, wait).await;
        let _ = relay.send_msg(ClientMessage::close(id));
        if ignored.total() > 0 {
            log::warn!(
                "{url}: ignored {} of {} events that do not answer the REQ ({ignored})",
                ignored.total(),
                budget.events()
            );
        }
        let ignored = ignored.total();
        match outcome {
            Ok(Ok(())) => RelayAnswer {
                url,
                answered: true,
                problem: None,
                events,
                ignored,
            },
            Ok(Err(problem)) => unanswered(problem, events, ignored),
            Err(_) => unanswered(
                format!(
                    "{url}: no EOSE within {}s",
                    self.tuning.query_timeout.as_secs_f64()
                ),
                events,
                ignored,
            ),
        }
    }

    /// Publishes `event` to every relay; returns the relays that accepted it and why the
    /// others did not.
    pub async fn publish(&self, event: &Event) -> (Vec<RelayUrl>, HashMap<RelayUrl, String>) {
        match self.client.send_event(event).await {
            Ok(output) => (
                output.success.into_iter().collect(),
                output.failed.into_iter().collect(),
            ),
            Err(e) => (
                Vec::new(),
                self.urls
                    .iter()
                    .map(|u| (u.clone(), e.to_string()))
                    .collect(),
            ),
        }
    }

    /// Disconnects from every relay.
    pub async fn shutdown(&self) {
        self.client.shutdown().await;
    }
}
