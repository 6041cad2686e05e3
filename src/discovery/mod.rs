//! Discovery on Nostr: the node's identity ([`identity`]), its kind 32001
//! announcement ([`announcement`], published by [`announcer`]), the relays
//! ([`relays`]), the [`resolver`] (the real `AddressResolver`) and the operator's follow
//! list ([`follows`], the `FollowListMonitor` actor). What a relay may send for one REQ is
//! bounded and screened ([`bounds`]).

pub mod announcement;
pub mod announcer;
pub mod bounds;
pub mod follows;
pub mod identity;
pub mod relays;
pub mod resolver;

use actix::prelude::*;
use nostr_sdk::prelude::{Keys, PublicKey};

use crate::config::Settings;
use crate::ports::PeerDirectory;
use announcement::AnnouncementFields;
use announcer::Announcer;
use follows::FollowListMonitor;
use relays::{RelaySet, RelayTuning};
use resolver::{NostrResolver, ResolverSettings};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("node key: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("relays: {0}")]
    Relays(#[from] relays::RelayError),
    #[error("nostr.operator_pubkey: {0}")]
    Operator(String),
}

/// Discovery as configured: the node's key, its relays and the resolver.
pub struct Discovery {
    pub keys: Keys,
    /// Whose follow list the node follows.
    pub operator: PublicKey,
    pub relays: RelaySet,
    pub resolver: NostrResolver,
}

/// The running discovery actors.
pub struct DiscoveryActors {
    pub announcer: Option<Addr<Announcer>>,
    pub follows: Addr<FollowListMonitor>,
}

impl Discovery {
    /// Connects to the relays as `keys`; `None` when no relay is configured.
    pub async fn connect(
        settings: &Settings,
        keys: Keys,
    ) -> Result<Option<Discovery>, DiscoveryError> {
        let n = &settings.nostr;
        if n.relays.is_empty() {
            return Ok(None);
        }
        let operator = match n.operator_pubkey.trim() {
            "" => keys.public_key(),
            text => PublicKey::parse(text).map_err(|e| DiscoveryError::Operator(e.to_string()))?,
        };
        let tuning = RelayTuning {
            query_timeout: n.query_timeout,
            connect_timeout: n.connect_timeout,
            retry_interval: n.retry_interval,
            // A REQ asks for up to two events per author.
            notification_capacity: RelayTuning::capacity_for(
                n.parallel_reqs,
                2 * n.max_authors_per_req,
            ),
        };
        let relays = RelaySet::connect(keys.clone(), &n.relays, tuning)
            .await?
            .with_bounds(bounds::ReqBounds {
                max_events: n.max_events_per_req,
                max_bytes: n.max_bytes_per_req,
            });
        let resolver = NostrResolver::new(
            relays.clone(),
            ResolverSettings {
                allow_ws_loopback: n.allow_ws_loopback,
                found_ttl: n.found_cache,
                not_found_ttl: n.not_found_cache,
                max_authors_per_req: n.max_authors_per_req,
                batch_window: n.batch_window,
                parallel_reqs: n.parallel_reqs,
            },
            resolver::system_clock(),
        );
        Ok(Some(Discovery {
            keys,
            operator,
            relays,
            resolver,
        }))
    }

    /// What the configuration says to announce, if anything: `node.public_endpoint` (the
    /// endpoint the session server binds tokens to) with the `nostr.announce` fields.
    pub fn announcement_fields(settings: &Settings) -> Option<AnnouncementFields> {
        let a = &settings.nostr.announce;
        let endpoint = settings.node.public_endpoint.trim();
        if endpoint.is_empty() {
            return None;
        }
        let mut meta = serde_json::Map::new();
        meta.insert("nodeId".into(), settings.node.id.clone().into());
        if !a.operator_name.is_empty() {
            meta.insert("operatorName".into(), a.operator_name.clone().into());
        }
        if !a.description.is_empty() {
            meta.insert("description".into(), a.description.clone().into());
        }
        Some(AnnouncementFields {
            node_id: settings.node.id.clone(),
            endpoint: endpoint.to_string(),
            base_address: a.base_address.clone(),
            supported_tokens: a.supported_tokens.clone(),
            features: a.features.clone(),
            metadata: Some(serde_json::Value::Object(meta)),
        })
    }

    /// Starts the announcer (when there is something to announce) and the follow monitor.
    pub fn start_actors(
        &self,
        settings: &Settings,
        directory: std::sync::Arc<dyn PeerDirectory>,
    ) -> DiscoveryActors {
        let n = &settings.nostr;
        let announcer = Self::announcement_fields(settings).map(|fields| {
            Announcer::new(
                self.relays.clone(),
                self.keys.clone(),
                n.allow_ws_loopback,
                Some(fields),
                n.retry_interval,
            )
            .start()
        });
        let follows = FollowListMonitor::new(
            self.relays.clone(),
            self.operator,
            Some(self.keys.public_key()),
            directory,
            n.query_timeout,
        )
        .start();
        DiscoveryActors { announcer, follows }
    }
}
