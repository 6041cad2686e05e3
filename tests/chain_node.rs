//! The node's real actors (supervisor, peer actors, persistence on SQLite) with the real
//! channel adapter on a real local chain (anvil, blocks mined only by the test); the other
//! ports are the in-memory doubles. Each test follows one peer through channel_needed →
//! channel_opening → connected (or failed), as the operator would see it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;

use btp_nips_node::chain::adapter::http_provider;
use btp_nips_node::chain::contract::PaymentChannels as PC;
use btp_nips_node::chain::{ChannelPolicy, EvmChannels};
use btp_nips_node::config::Settings;
use btp_nips_node::lifecycle::{Announcement, PeerRecord, PeerState};
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::{ChannelPort, ChannelRequest, ChannelStatus, Fault, PeerTarget};
use btp_nips_node::storage::Database;
use support::chain::{Anvil, RpcProxy, CHAIN_ID, ETH};
use support::node::{memory_node, pubkey, wait_until};

const CONFIRMATIONS: u64 = 5;
/// Generous bound for anything the node does within a few 1-second polls.
const SOON: Duration = Duration::from_secs(20);

/// The real adapter, with a record of every status answer it gave the node, and of what
/// the database held each time the node asked it to broadcast.
struct Observed {
    inner: EvmChannels,
    statuses: Mutex<Vec<Result<ChannelStatus, Fault>>>,
    db: Database,
    /// Per broadcast: whether the stored record already held that transaction's hash.
    durable_at_broadcast: Mutex<Vec<bool>>,
}

impl Observed {
    fn statuses(&self) -> Vec<Result<ChannelStatus, Fault>> {
        self.statuses.lock().unwrap().clone()
    }

    /// Waits until the node has been told `wanted` at least `times` times.
    async fn wait_for(
        &self,
        what: &str,
        times: usize,
        wanted: impl Fn(&Result<ChannelStatus, Fault>) -> bool,
    ) {
        support::wait::eventually(SOON, what, || {
            let n = self.statuses().iter().filter(|s| wanted(s)).count();
            async move { (n >= times).then_some(()) }
        })
        .await
    }
}

#[async_trait]
impl ChannelPort for Observed {
    async fn find_channel(&self, peer: &PeerTarget) -> Result<Option<String>, Fault> {
        self.inner.find_channel(peer).await
    }
    async fn request_channel(&self, peer: &PeerTarget) -> Result<ChannelRequest, Fault> {
        self.inner.request_channel(peer).await
    }
    async fn open_channel(
        &self,
        peer: &PeerTarget,
        deposit_wei: Option<u128>,
    ) -> Result<String, Fault> {
        self.inner.open_channel(peer, deposit_wei).await
    }
    async fn broadcast_open(&self, tx_hash: &str) -> Result<(), Fault> {
        let stored = self.db.load_all().expect("database readable");
        let durable = stored
            .iter()
            .any(|r| r.channel_tx_hash.as_deref() == Some(tx_hash));
        self.durable_at_broadcast.lock().unwrap().push(durable);
        self.inner.broadcast_open(tx_hash).await
    }
    async fn channel_status(&self, tx_hash: &str) -> Result<ChannelStatus, Fault> {
        let status = self.inner.channel_status(tx_hash).await;
        self.statuses.lock().unwrap().push(status.clone());
        status
    }
    fn confirmations_required(&self) -> u64 {
        self.inner.confirmations_required()
    }
}

struct Fixture {
    anvil: Anvil,
    contract: Address,
    key: PrivateKeySigner,
    payee: Address,
    world: MemoryWorld,
    db: Database,
    settings: Settings,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(opening_timeout_seconds: u64) -> Fixture {
        Self::with_recheck(opening_timeout_seconds, 600).await
    }

    async fn with_recheck(opening_timeout_seconds: u64, recheck_seconds: u64) -> Fixture {
        let anvil = Anvil::start();
        let deployer = anvil.funded_key(10).await;
        let contract = anvil.deploy(&deployer).await;
        let key = anvil.funded_key(100).await;
        let payee = PrivateKeySigner::random().address();
        let world = MemoryWorld::new();
        let mut announcement = MemoryWorld::announcement_for(&pubkey(1));
        announcement.base_address = payee.to_string();
        world.announce(&pubkey(1), Announcement { ..announcement });
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("node.db").to_str().unwrap(), 2).unwrap();
        let settings = support::node::settings(&format!(
            "btp_nips: {{peer_connections: {{channel_poll_interval_seconds: 1, channel_opening_timeout_seconds: {opening_timeout_seconds}, channel_recheck_seconds: {recheck_seconds}}}}}"
        ));
        Fixture {
            anvil,
            contract,
            key,
            payee,
            world,
            db,
            settings,
            _dir: dir,
        }
    }

    /// A fresh adapter (as a fresh process builds it) talking to `url`.
    fn adapter(&self, url: &str) -> Arc<Observed> {
        self.adapter_with(url, None)
    }

    /// As [`Fixture::adapter`], with the auto-open caps `(per_channel, total)`.
    fn adapter_with(&self, url: &str, auto_open: Option<(U256, U256)>) -> Arc<Observed> {
        Arc::new(Observed {
            inner: EvmChannels::new(
                http_provider(url).unwrap(),
                self.key.clone(),
                CHAIN_ID,
                self.contract,
                CONFIRMATIONS,
                Duration::from_secs(2),
                ChannelPolicy {
                    deposit: U256::from(ETH),
                    duration: Duration::from_secs(30 * 24 * 3600),
                    min_balance: U256::from(ETH / 10),
                    min_time_left: Duration::from_secs(24 * 3600),
                    auto_open,
                },
            )
            // A reorg's drop is reported within the tests' waits.
            .with_dropped_grace(Duration::from_secs(1)),
            statuses: Mutex::new(Vec::new()),
            db: self.db.clone(),
            durable_at_broadcast: Mutex::new(Vec::new()),
        })
    }

    async fn start_node(&self, channels: Arc<Observed>) -> Node {
        let mut ports = self.world.ports();
        ports.channels = channels;
        memory_node(self.settings.clone(), &self.world)
            .ports(ports)
            .database(self.db.clone())
            .start()
            .await
            .unwrap()
    }

    async fn open_count(&self) -> U256 {
        self.anvil
            .view(
                self.contract,
                PC::openCountCall {
                    payer: self.key.address(),
                },
            )
            .await
    }

    async fn channels_to_payee(&self) -> Vec<B256> {
        self.anvil
            .view(
                self.contract,
                PC::channelsBetweenCall {
                    payer: self.key.address(),
                    payee: self.payee,
                },
            )
            .await
    }

    async fn on_chain_or_pool(&self, tx: &str) -> bool {
        let hash: B256 = tx.parse().unwrap();
        self.anvil
            .provider
            .get_transaction_by_hash(hash)
            .await
            .unwrap()
            .is_some()
    }
}

fn peer(peers: &[PeerRecord]) -> &PeerRecord {
    peers
        .iter()
        .find(|p| p.nostr_pubkey == pubkey(1))
        .expect("the peer is known")
}

async fn wait_state(node: &Node, state: PeerState, limit: Duration) -> PeerRecord {
    let peers = wait_until(node, limit, state.as_str(), |peers| {
        peers
            .iter()
            .any(|p| p.nostr_pubkey == pubkey(1) && p.state == state)
    })
    .await;
    peer(&peers).clone()
}

/// Follows the peer, waits for channel_needed, approves, and waits until the open
/// transaction is on disk and in the chain's pool; returns its hash.
async fn follow_and_approve(f: &Fixture, node: &Node) -> String {
    node.follow(&pubkey(1)).await.unwrap();
    let needed = wait_state(node, PeerState::ChannelNeeded, SOON).await;
    assert_eq!(
        needed.failure_reason.as_deref(),
        Some("waiting for the operator to open a channel"),
        "the operator is told, nothing is opened by itself"
    );
    assert_eq!(f.open_count().await, U256::ZERO);
    node.approve_channel(&pubkey(1))
        .await
        .expect("approval applies in channel_needed");
    let opening = wait_state(node, PeerState::ChannelOpening, SOON).await;
    let tx = opening
        .channel_tx_hash
        .clone()
        .expect("the hash is recorded");
    support::wait::eventually(SOON, "the broadcast", || async {
        f.on_chain_or_pool(&tx).await.then_some(())
    })
    .await;
    // Read once the transaction is out: the broadcast waits for the hash's write (the
    // node's own view says channel_opening before the write is committed).
    let stored = f.db.load_all().unwrap();
    assert_eq!(
        peer(&stored).channel_tx_hash.as_deref(),
        Some(tx.as_str()),
        "the hash is in the database"
    );
    tx
}

async fn snapshot(node: &Node) -> PeerRecord {
    node.peer(&pubkey(1)).await.unwrap().expect("running")
}

#[actix_rt::test]
async fn channel_needed_then_approved_open_connects_after_n_confirmations() {
    let f = Fixture::new(120).await;
    let channels = f.adapter(&f.anvil.url);
    let node = f.start_node(channels.clone()).await;
    follow_and_approve(&f, &node).await;
    f.anvil.mine(CONFIRMATIONS - 1).await;
    channels
        .wait_for("N-1 confirmations seen", 2, |s| {
            *s == Ok(ChannelStatus::Pending {
                confirmations: CONFIRMATIONS - 1,
            })
        })
        .await;
    assert_eq!(
        snapshot(&node).await.state,
        PeerState::ChannelOpening,
        "one confirmation short is not enough"
    );
    f.anvil.mine(1).await;
    let connected = wait_state(&node, PeerState::Connected, SOON).await;
    assert_eq!(
        *channels.durable_at_broadcast.lock().unwrap(),
        vec![true],
        "one broadcast, and the hash was committed to the database before it"
    );
    let ids = f.channels_to_payee().await;
    assert_eq!(ids.len(), 1);
    assert_eq!(connected.channel_id, Some(format!("{:#x}", ids[0])));
    assert_eq!(f.open_count().await, U256::from(1));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn an_open_that_never_gets_a_block_fails_after_the_timeout() {
    let timeout = 4;
    let f = Fixture::new(timeout).await;
    let channels = f.adapter(&f.anvil.url);
    let node = f.start_node(channels.clone()).await;
    follow_and_approve(&f, &node).await;
    let opening = snapshot(&node).await;
    let since = opening
        .channel_opening_since
        .expect("the wait's start is recorded while opening");
    let failed = wait_state(&node, PeerState::Failed, SOON).await;
    assert_eq!(failed.failure_reason.as_deref(), Some("channel timeout"));
    assert!(
        failed.updated_at - since >= Duration::from_secs(timeout),
        "failed no earlier than the timeout"
    );
    // Nothing of the abandoned attempt outlives it: a retry starts from the chain.
    assert_eq!(failed.channel_opening_since, None);
    assert_eq!(failed.channel_tx_hash, None);
    assert!(!channels.statuses().is_empty());
    assert!(
        channels
            .statuses()
            .iter()
            .all(|s| *s == Ok(ChannelStatus::Pending { confirmations: 0 })),
        "it was only ever pending"
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_restart_in_channel_opening_resumes_on_the_stored_hash_and_opens_once() {
    let f = Fixture::new(120).await;
    let first_run = f.adapter(&f.anvil.url);
    let node = f.start_node(first_run.clone()).await;
    let tx = follow_and_approve(&f, &node).await;
    f.anvil.mine(2).await;
    first_run
        .wait_for("2 confirmations seen", 1, |s| {
            *s == Ok(ChannelStatus::Pending { confirmations: 2 })
        })
        .await;
    node.shutdown().await.unwrap();
    drop(node);
    let stored = f.db.load_all().unwrap();
    assert_eq!(peer(&stored).state, PeerState::ChannelOpening);

    // A new node on the same database with a fresh adapter: nothing of the first run's
    // memory survives but what is on disk and on chain.
    let second_run = f.adapter(&f.anvil.url);
    let node = f.start_node(second_run.clone()).await;
    second_run
        .wait_for("the resumed wait", 1, |s| {
            *s == Ok(ChannelStatus::Pending { confirmations: 2 })
        })
        .await;
    f.anvil.mine(CONFIRMATIONS).await;
    let connected = wait_state(&node, PeerState::Connected, SOON).await;
    assert_eq!(connected.channel_tx_hash.as_deref(), Some(tx.as_str()));
    assert_eq!(
        f.open_count().await,
        U256::from(1),
        "exactly one open on chain"
    );
    assert_eq!(
        connected.channel_id,
        Some(format!("{:#x}", f.channels_to_payee().await[0]))
    );
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_reorg_that_drops_the_open_sends_the_peer_back_to_channel_needed() {
    let f = Fixture::new(120).await;
    let channels = f.adapter(&f.anvil.url);
    let node = f.start_node(channels.clone()).await;
    let dropped_tx = follow_and_approve(&f, &node).await;
    f.anvil.mine(2).await;
    channels
        .wait_for("2 confirmations seen", 1, |s| {
            *s == Ok(ChannelStatus::Pending { confirmations: 2 })
        })
        .await;
    f.anvil.reorg(2).await;
    channels
        .wait_for("the drop", 1, |s| *s == Ok(ChannelStatus::Dropped))
        .await;
    let needed = wait_state(&node, PeerState::ChannelNeeded, SOON).await;
    assert_eq!(
        needed.channel_tx_hash, None,
        "the dropped hash is forgotten"
    );
    assert_eq!(f.open_count().await, U256::ZERO);
    // The operator approves again; the new open lands, once.
    node.approve_channel(&pubkey(1)).await.unwrap();
    let opening = wait_state(&node, PeerState::ChannelOpening, SOON).await;
    let tx = opening.channel_tx_hash.expect("a new hash");
    assert_ne!(tx, dropped_tx);
    support::wait::eventually(SOON, "the new broadcast", || async {
        f.on_chain_or_pool(&tx).await.then_some(())
    })
    .await;
    f.anvil.mine(CONFIRMATIONS).await;
    wait_state(&node, PeerState::Connected, SOON).await;
    assert_eq!(f.open_count().await, U256::from(1));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn an_rpc_outage_while_waiting_keeps_the_peer_opening_until_it_confirms() {
    let f = Fixture::new(120).await;
    let proxy = RpcProxy::start(&f.anvil.url).await;
    let channels = f.adapter(&proxy.url);
    let node = f.start_node(channels.clone()).await;
    follow_and_approve(&f, &node).await;
    proxy.stop();
    f.anvil.mine(CONFIRMATIONS).await;
    channels
        .wait_for("the node's own RPC faults during the outage", 2, |s| {
            matches!(s, Err(Fault::Local(_)))
        })
        .await;
    let during = snapshot(&node).await;
    assert_eq!(during.state, PeerState::ChannelOpening, "still waiting");
    assert_eq!(during.reconnect_attempts, 0, "not counted as a lost peer");
    proxy.resume();
    let connected = wait_state(&node, PeerState::Connected, SOON).await;
    assert!(connected.channel_id.is_some());
    assert_eq!(f.open_count().await, U256::from(1));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_followed_peer_gets_a_channel_by_the_auto_open_policy_without_approval() {
    let f = Fixture::new(120).await;
    let channels = f.adapter_with(&f.anvil.url, Some((U256::from(ETH), U256::from(3 * ETH))));
    let node = f.start_node(channels.clone()).await;
    node.follow(&pubkey(1)).await.unwrap();
    let opening = wait_state(&node, PeerState::ChannelOpening, SOON).await;
    let tx = opening.channel_tx_hash.expect("a hash");
    support::wait::eventually(SOON, "the broadcast", || async {
        f.on_chain_or_pool(&tx).await.then_some(())
    })
    .await;
    f.anvil.mine(CONFIRMATIONS).await;
    let connected = wait_state(&node, PeerState::Connected, SOON).await;
    assert_eq!(
        connected.channel_id,
        Some(format!("{:#x}", f.channels_to_payee().await[0]))
    );
    assert_eq!(f.open_count().await, U256::from(1));
    assert_eq!(*channels.durable_at_broadcast.lock().unwrap(), vec![true]);
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_channel_the_operator_opened_elsewhere_is_found_by_the_recheck() {
    let f = Fixture::with_recheck(120, 1).await;
    let channels = f.adapter(&f.anvil.url);
    let node = f.start_node(channels.clone()).await;
    node.follow(&pubkey(1)).await.unwrap();
    wait_state(&node, PeerState::ChannelNeeded, SOON).await;
    // As `open-channel` does, from another process with the node's key.
    let (_, now) = f.anvil.head().await;
    let receipt = f
        .anvil
        .transact(
            &f.key,
            f.contract,
            U256::from(ETH),
            PC::openCall {
                payee: f.payee,
                expiry: now + 30 * 24 * 3600,
            },
        )
        .await;
    assert!(receipt.status());
    let connected = wait_state(&node, PeerState::Connected, SOON).await;
    assert_eq!(
        connected.channel_id,
        Some(format!("{:#x}", f.channels_to_payee().await[0]))
    );
    assert_eq!(
        connected.channel_tx_hash, None,
        "the node sent nothing itself"
    );
    assert_eq!(f.open_count().await, U256::from(1));
    node.shutdown().await.unwrap();
}
