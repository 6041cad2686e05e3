//! [`SupervisorDirectory`]: the [`PeerDirectory`] port over the supervisor's mailbox. The
//! adapters (session server, follow-list monitor, event flow) hold this, never the
//! supervisor's address, so they compile and test without the actor layer.

use actix::Addr;
use async_trait::async_trait;

use super::notification::FollowSource;
use super::supervisor::{
    AdmitInbound, FollowPeer, InboundEnded, ObservedPeer, PeerSupervisor, ReconcileFollows,
    UnfollowPeer,
};
use crate::lifecycle::Event;
use crate::ports::{Admission, PeerDirectory};

/// The supervisor, as the adapters see it.
#[derive(Clone)]
pub struct SupervisorDirectory {
    supervisor: Addr<PeerSupervisor>,
}

impl SupervisorDirectory {
    pub fn new(supervisor: Addr<PeerSupervisor>) -> Self {
        SupervisorDirectory { supervisor }
    }
}

#[async_trait]
impl PeerDirectory for SupervisorDirectory {
    async fn admit(&self, nostr_pubkey: &str) -> Admission {
        let asked = self.supervisor.send(AdmitInbound {
            nostr_pubkey: nostr_pubkey.to_owned(),
        });
        match asked.await {
            Ok(admission) => admission,
            Err(e) => Admission::Refused {
                reason: format!("the node is stopping ({e})"),
            },
        }
    }

    fn observe(&self, nostr_pubkey: &str, event: Event) {
        self.supervisor.do_send(ObservedPeer {
            nostr_pubkey: nostr_pubkey.to_owned(),
            event,
        });
    }

    fn follow(&self, nostr_pubkey: &str) {
        self.supervisor.do_send(FollowPeer {
            nostr_pubkey: nostr_pubkey.to_owned(),
            by: FollowSource::FollowList,
        });
    }

    fn unfollow(&self, nostr_pubkey: &str) {
        self.supervisor.do_send(UnfollowPeer {
            nostr_pubkey: nostr_pubkey.to_owned(),
            by: FollowSource::FollowList,
        });
    }

    fn reconcile(&self, followed: Vec<String>) {
        self.supervisor.do_send(ReconcileFollows { followed });
    }

    fn inbound_ended(&self, nostr_pubkey: &str) {
        self.supervisor.do_send(InboundEnded {
            nostr_pubkey: nostr_pubkey.to_owned(),
        });
    }
}
