//! One node, three followed peers whose channels are all needed at once, auto-open on a
//! real local chain (anvil), run many times: the opens are signed back to back and their
//! durable writes and broadcasts interleave. Every signed open must be broadcast exactly
//! once, every link must be connected within `confirmations` blocks plus a few (counted in
//! blocks, not wall time), and exactly one channel per link must be on chain.
//!
//! Blocks are mined by the test: as soon as every link has broadcast its open and asked
//! for its status since the last block (so a healthy run is never slowed down by the
//! miner), and otherwise once every `IDLE_BLOCK` (so a link that is stuck waiting for
//! something sees the chain go on without it, and the wait shows up as blocks).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use btp_nips_node::chain::adapter::http_provider;
use btp_nips_node::chain::contract::PaymentChannels as PC;
use btp_nips_node::chain::{ChannelPolicy, EvmChannels};
use btp_nips_node::lifecycle::{Announcement, PeerState};
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::{ChannelPort, ChannelRequest, ChannelStatus, Fault, PeerTarget};
use btp_nips_node::storage::Database;
use support::chain::{Anvil, CHAIN_ID, ETH};
use support::node::pubkey;
use tokio::sync::Notify;

const CONFIRMATIONS: u64 = 2;
const PEERS: usize = 3;
const RUNS: usize = 20;
/// Blocks a link may take beyond `CONFIRMATIONS` from the node's start: the block that
/// includes the opens, and slack for a status poll that lands just after a block.
const SLACK_BLOCKS: u64 = 3;
/// A block is mined at least this often, whatever the node does.
const IDLE_BLOCK: Duration = Duration::from_millis(1500);
/// Only a fail-safe: the assertions are on blocks.
const WALL_LIMIT: Duration = Duration::from_secs(90);

/// What the node asked of the real adapter, per transaction.
#[derive(Default)]
struct Log {
    signed: Vec<String>,
    broadcasts: Vec<(String, Result<(), Fault>)>,
    /// Broadcast opens not yet confirmed, and whether each asked for its status since the
    /// last block.
    polled_since_block: HashMap<String, bool>,
}

struct Recorder {
    inner: EvmChannels,
    log: Mutex<Log>,
    activity: Notify,
}

impl Recorder {
    fn log<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        let r = f(&mut self.log.lock().unwrap());
        self.activity.notify_one();
        r
    }

    /// Every link has broadcast its open and each one not yet confirmed has polled it since
    /// the last block.
    fn ready_for_block(&self) -> bool {
        let log = self.log.lock().unwrap();
        log.broadcasts.len() >= PEERS
            && !log.polled_since_block.is_empty()
            && log.polled_since_block.values().all(|p| *p)
    }

    fn mined(&self) {
        let mut log = self.log.lock().unwrap();
        for polled in log.polled_since_block.values_mut() {
            *polled = false;
        }
    }
}

#[async_trait]
impl ChannelPort for Recorder {
    async fn find_channel(&self, peer: &PeerTarget) -> Result<Option<String>, Fault> {
        self.inner.find_channel(peer).await
    }
    async fn request_channel(&self, peer: &PeerTarget) -> Result<ChannelRequest, Fault> {
        let result = self.inner.request_channel(peer).await;
        if let Ok(ChannelRequest::Opened { tx_hash }) = &result {
            self.log(|l| l.signed.push(tx_hash.clone()));
        }
        result
    }
    async fn open_channel(
        &self,
        peer: &PeerTarget,
        deposit_wei: Option<u128>,
    ) -> Result<String, Fault> {
        let result = self.inner.open_channel(peer, deposit_wei).await;
        if let Ok(tx_hash) = &result {
            self.log(|l| l.signed.push(tx_hash.clone()));
        }
        result
    }
    async fn broadcast_open(&self, tx_hash: &str) -> Result<(), Fault> {
        let result = self.inner.broadcast_open(tx_hash).await;
        self.log(|l| {
            l.broadcasts.push((tx_hash.to_string(), result.clone()));
            l.polled_since_block.insert(tx_hash.to_string(), true);
        });
        result
    }
    async fn channel_status(&self, tx_hash: &str) -> Result<ChannelStatus, Fault> {
        let status = self.inner.channel_status(tx_hash).await;
        self.log(|l| {
            if matches!(status, Ok(ChannelStatus::Confirmed { .. })) {
                l.polled_since_block.remove(tx_hash);
            } else if let Some(polled) = l.polled_since_block.get_mut(tx_hash) {
                *polled = true;
            }
        });
        status
    }
    fn confirmations_required(&self) -> u64 {
        self.inner.confirmations_required()
    }
}

/// Mines a block whenever the recorder says every link is ready for one, or `IDLE_BLOCK`
/// after the last, until `stop` is notified.
async fn miner(anvil: Arc<Anvil>, recorder: Arc<Recorder>, stop: Arc<Notify>) {
    loop {
        let idle = tokio::time::sleep(IDLE_BLOCK);
        tokio::pin!(idle);
        loop {
            if recorder.ready_for_block() {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.notified() => return,
                _ = &mut idle => break,
                _ = recorder.activity.notified() => {}
            }
        }
        recorder.mined();
        anvil.mine(1).await;
    }
}

struct Run {
    payees: Vec<Address>,
    key: PrivateKeySigner,
    recorder: Arc<Recorder>,
    node: Node,
    _dir: tempfile::TempDir,
}

async fn start_run(anvil: &Anvil, contract: Address) -> Run {
    let key = anvil.funded_key(10).await;
    let world = MemoryWorld::new();
    let mut payees = Vec::new();
    for i in 1..=PEERS {
        let payee = PrivateKeySigner::random().address();
        let mut announcement = MemoryWorld::announcement_for(&pubkey(i));
        announcement.base_address = payee.to_string();
        world.announce(&pubkey(i), Announcement { ..announcement });
        payees.push(payee);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("node.db").to_str().unwrap(), 2).unwrap();
    let settings = support::node::settings(
        "btp_nips: {peer_connections: {channel_poll_interval_seconds: 1, channel_opening_timeout_seconds: 120, channel_recheck_seconds: 30}}",
    );
    let recorder = Arc::new(Recorder {
        inner: EvmChannels::new(
            http_provider(&anvil.url).unwrap(),
            key.clone(),
            CHAIN_ID,
            contract,
            CONFIRMATIONS,
            Duration::from_secs(5),
            ChannelPolicy {
                deposit: U256::from(ETH / 100),
                duration: Duration::from_secs(30 * 24 * 3600),
                min_balance: U256::from(ETH / 1000),
                min_time_left: Duration::from_secs(24 * 3600),
                auto_open: Some((U256::from(ETH), U256::from(5 * ETH))),
            },
        ),
        log: Mutex::new(Log::default()),
        activity: Notify::new(),
    });
    let mut ports = world.ports();
    ports.channels = recorder.clone();
    let node = support::node::memory_node(settings, &world)
        .ports(ports)
        .database(db)
        .start()
        .await
        .unwrap();
    Run {
        payees,
        key,
        recorder,
        node,
        _dir: dir,
    }
}

#[actix_rt::test]
async fn three_links_auto_opened_together_each_broadcast_once_and_connected_within_blocks() {
    let _ = env_logger::builder().is_test(true).try_init();
    let anvil = Arc::new(Anvil::start());
    let deployer = anvil.funded_key(10).await;
    let contract = anvil.deploy(&deployer).await;
    for run_no in 1..=RUNS {
        let run = start_run(&anvil, contract).await;
        eprintln!("run {run_no}");
        let (start_block, _) = anvil.head().await;
        let stop = Arc::new(Notify::new());
        let mining = tokio::spawn(miner(anvil.clone(), run.recorder.clone(), stop.clone()));
        // Started together: all three needed at once.
        for i in 1..=PEERS {
            run.node.follow(&pubkey(i)).await.unwrap();
        }
        let mut connected_at: HashMap<String, u64> = HashMap::new();
        let started = std::time::Instant::now();
        while connected_at.len() < PEERS {
            let peers = run.node.peers().await.unwrap();
            let (head, _) = anvil.head().await;
            for p in peers.iter().filter(|p| p.state == PeerState::Connected) {
                connected_at.entry(p.nostr_pubkey.clone()).or_insert(head);
            }
            if let Some(failed) = peers.iter().find(|p| p.state == PeerState::Failed) {
                panic!("run {run_no}: a link failed: {failed:?}");
            }
            assert!(
                started.elapsed() < WALL_LIMIT,
                "run {run_no}: not all links connected: {:?}",
                peers
                    .iter()
                    .map(|p| (p.state, p.failure_reason.clone()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.notify_one();
        mining.await.unwrap();

        {
            let log = run.recorder.log.lock().unwrap();
            let signed: HashSet<&String> = log.signed.iter().collect();
            assert_eq!(
                log.signed.len(),
                PEERS,
                "run {run_no}: one open signed per link: {:?}",
                log.signed
            );
            let mut broadcast: Vec<&String> = log.broadcasts.iter().map(|(h, _)| h).collect();
            broadcast.sort();
            let mut expected: Vec<&String> = signed.iter().copied().collect();
            expected.sort();
            assert_eq!(
                broadcast, expected,
                "run {run_no}: every signed open broadcast exactly once"
            );
            for (hash, result) in &log.broadcasts {
                assert!(
                    result.is_ok(),
                    "run {run_no}: broadcast of {hash} failed: {result:?}"
                );
            }
        }
        for (link, block) in &connected_at {
            assert!(
                *block <= start_block + CONFIRMATIONS + SLACK_BLOCKS,
                "run {run_no}: link {} connected at block {block}, started at {start_block}",
                &link[56..]
            );
        }
        for payee in &run.payees {
            let ids = anvil
                .view(
                    contract,
                    PC::channelsBetweenCall {
                        payer: run.key.address(),
                        payee: *payee,
                    },
                )
                .await;
            assert_eq!(ids.len(), 1, "run {run_no}: exactly one open to {payee}");
        }
        let opens = anvil
            .view(
                contract,
                PC::openCountCall {
                    payer: run.key.address(),
                },
            )
            .await;
        assert_eq!(opens, U256::from(PEERS), "run {run_no}: one open per link");
        run.node.shutdown().await.unwrap();
    }
}
