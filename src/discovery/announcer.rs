//! `Announcer`: publishes this node's kind 32001 announcement to every configured relay at
//! startup and again whenever its fields change ([`SetAnnouncement`]). A relay that did not
//! accept the event is sent it again every `retry_interval` until it does. Each new version
//! is created at least one second after the previous one, so "newest wins" picks it even
//! when two versions fall in the same second.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use nostr_sdk::prelude::{Event, Keys, RelayUrl, Timestamp as NostrTimestamp};

use super::announcement::AnnouncementFields;
use super::relays::RelaySet;
use crate::untrusted::untrusted;

/// Announce these fields (published only if they differ from the current ones).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), String>")]
pub struct SetAnnouncement(pub AnnouncementFields);

/// What was published: the event and the relays that accepted it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Option<Published>")]
pub struct GetPublished;

#[derive(Debug, Clone)]
pub struct Published {
    pub event: Event,
    pub accepted: Vec<RelayUrl>,
    /// Relays that refused or could not be reached, and why (retried).
    pub pending: HashMap<RelayUrl, String>,
}

pub struct Announcer {
    relays: RelaySet,
    keys: Keys,
    allow_ws_loopback: bool,
    fields: Option<AnnouncementFields>,
    published: Option<Published>,
    retry_interval: Duration,
    retry: Option<SpawnHandle>,
}

impl Announcer {
    pub fn new(
        relays: RelaySet,
        keys: Keys,
        allow_ws_loopback: bool,
        fields: Option<AnnouncementFields>,
        retry_interval: Duration,
    ) -> Self {
        Announcer {
            relays,
            keys,
            allow_ws_loopback,
            fields,
            published: None,
            retry_interval,
            retry: None,
        }
    }

    /// Signs the current fields as a new version and sends it.
    fn publish_new(&mut self, ctx: &mut Context<Self>) {
        let Some(fields) = &self.fields else { return };
        let now = NostrTimestamp::now().as_secs();
        let created_at = match &self.published {
            Some(p) => now.max(p.event.created_at.as_secs() + 1),
            None => now,
        };
        let event = fields.sign(&self.keys, NostrTimestamp::from(created_at));
        log::info!(
            "announcing kind 32001 {} (created_at {created_at})",
            event.id
        );
        self.published = Some(Published {
            event,
            accepted: Vec::new(),
            pending: HashMap::new(),
        });
        self.send(ctx);
    }

    /// Sends the current version to the relays that have not accepted it yet.
    fn send(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        let Some(published) = &self.published else {
            return;
        };
        let event = published.event.clone();
        let relays = self.relays.clone();
        let id = event.id;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(async move { relays.publish(&event).await }).map(
                move |(accepted, failed), act, ctx| {
                    let Some(p) = act.published.as_mut().filter(|p| p.event.id == id) else {
                        return; // a newer version replaced this one meanwhile
                    };
                    for url in accepted {
                        p.pending.remove(&url);
                        if !p.accepted.contains(&url) {
                            p.accepted.push(url);
                        }
                    }
                    for (url, why) in failed {
                        // The relay's OK message: its own words, kept bounded and escaped.
                        let why = untrusted(&why).to_string();
                        if !p.accepted.contains(&url) {
                            log::warn!("announcement not accepted by {url}: {why}");
                            p.pending.insert(url, why);
                        }
                    }
                    if !p.pending.is_empty() || p.accepted.len() < act.relays.urls().len() {
                        let every = act.retry_interval;
                        act.retry = Some(ctx.run_later(every, |act, ctx| act.send(ctx)));
                    }
                },
            ),
        );
    }
}

impl Actor for Announcer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.publish_new(ctx);
    }
}

impl Handler<SetAnnouncement> for Announcer {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: SetAnnouncement, ctx: &mut Self::Context) -> Self::Result {
        msg.0.check(self.allow_ws_loopback)?;
        if self.fields.as_ref() == Some(&msg.0) {
            return Ok(());
        }
        self.fields = Some(msg.0);
        self.publish_new(ctx);
        Ok(())
    }
}

impl Handler<GetPublished> for Announcer {
    type Result = MessageResult<GetPublished>;
    fn handle(&mut self, _: GetPublished, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.published.clone())
    }
}
