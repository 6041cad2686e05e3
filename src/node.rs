//! The node: opens the database, recovers every stored peer and starts the actors.
//! Must be called from inside a running actix `System`.

use actix::prelude::*;

use crate::actors::clock::NodeClock;
use crate::actors::persistence::{Flush, PersistenceActor, PersistenceError};
use crate::actors::supervisor::{PeerSupervisor, StopAllPeers};
use crate::config::Settings;
use crate::ports::Ports;
use crate::storage::{Database, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("persistence: {0}")]
    Persistence(#[from] PersistenceError),
    #[error("an actor is gone: {0}")]
    Mailbox(#[from] MailboxError),
}

/// A running node's handles.
pub struct Node {
    pub db: Database,
    pub persistence: Addr<PersistenceActor>,
    pub supervisor: Addr<PeerSupervisor>,
}

impl Node {
    /// Opens (and migrates) the database, loads every peer and starts the actors.
    pub fn start(settings: &Settings, ports: Ports, clock: NodeClock) -> Result<Node, NodeError> {
        let db = Database::open(&settings.database.url, settings.database.pool_size)?;
        Self::start_on(db, settings, ports, clock)
    }

    /// As [`Node::start`], on an already opened database.
    pub fn start_on(
        db: Database,
        settings: &Settings,
        ports: Ports,
        clock: NodeClock,
    ) -> Result<Node, NodeError> {
        let stored = db.load_all()?;
        log::info!("loaded {} stored peers", stored.len());
        let persistence = PersistenceActor::new(db.clone(), settings.persistence.clone()).start();
        let supervisor = PeerSupervisor::new(
            settings.btp_nips.peer_connections.clone(),
            ports,
            persistence.clone(),
            clock,
            stored,
        )
        .start();
        Ok(Node {
            db,
            persistence,
            supervisor,
        })
    }

    /// Stops every peer and waits until every change they made is committed.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.supervisor.send(StopAllPeers).await?;
        // Let the peers handle their Shutdown; a write that still comes later is made by
        // the persistence actor's final write when the system stops.
        tokio::task::yield_now().await;
        self.persistence.send(Flush).await??;
        Ok(())
    }
}
