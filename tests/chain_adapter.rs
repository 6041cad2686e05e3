//! The `EvmChannels` adapter against a real local chain (anvil, `--no-mining`: every block
//! is mined by the test, so confirmation counts are exact).

mod support;

use alloy::primitives::{Address, B256, U256};
use btp_nips_node::chain::adapter::DEFAULT_DROPPED_GRACE;
use btp_nips_node::chain::contract::PaymentChannels as PC;
use btp_nips_node::chain::{ChainError, ChannelPolicy, EvmChannels};
use btp_nips_node::config::Settings;
use btp_nips_node::ports::{ChannelPort, ChannelRequest, ChannelStatus, Fault, PeerTarget};
use support::chain::{ChainFixture, RpcProxy, SendGate, CHAIN_ID, ETH};

const CONFIRMATIONS: u64 = 5;

fn policy() -> ChannelPolicy {
    ChainFixture::policy(None)
}

impl ChainFixture {
    fn adapter_at(&self, url: &str, policy: ChannelPolicy) -> EvmChannels {
        self.adapter_with(url, CONFIRMATIONS, policy)
    }

    fn adapter(&self) -> EvmChannels {
        self.adapter_at(&self.anvil.url, policy())
    }

    async fn known_to_chain(&self, tx: &str) -> bool {
        self.chain_tx(tx).await.is_some()
    }
}

fn peer(payee: Address, followed: bool) -> PeerTarget {
    PeerTarget {
        nostr_pubkey: format!("{:0>64}", "b0b"),
        ilp_address: None,
        endpoint: None,
        base_address: Some(payee.to_string()),
        followed,
        event_cursor: None,
    }
}

#[tokio::test]
async fn an_open_is_signed_unsent_then_confirmed_after_exactly_n_blocks() {
    let f = ChainFixture::new().await;
    let adapter = f.adapter();
    let payee = Address::repeat_byte(0xb0);
    assert_eq!(adapter.find_channel(&peer(payee, true)).await, Ok(None));
    let tx = adapter
        .open_channel(&peer(payee, true), None)
        .await
        .expect("signs");
    assert!(
        !f.known_to_chain(&tx).await,
        "signing sends nothing: the core persists the hash first"
    );
    adapter.broadcast_open(&tx).await.expect("broadcast");
    assert_eq!(
        adapter.channel_status(&tx).await,
        Ok(ChannelStatus::Pending { confirmations: 0 })
    );
    for expected in 1..CONFIRMATIONS {
        f.anvil.mine(1).await;
        assert_eq!(
            adapter.channel_status(&tx).await,
            Ok(ChannelStatus::Pending {
                confirmations: expected
            })
        );
    }
    f.anvil.mine(1).await;
    let Ok(ChannelStatus::Confirmed { channel_id }) = adapter.channel_status(&tx).await else {
        panic!("confirmed after {CONFIRMATIONS} blocks");
    };
    let ids = f
        .anvil
        .view(
            f.contract,
            PC::channelsBetweenCall {
                payer: f.key.address(),
                payee,
            },
        )
        .await;
    assert_eq!(ids.len(), 1);
    assert_eq!(channel_id, format!("{:#x}", ids[0]));
    assert_eq!(
        adapter.find_channel(&peer(payee, true)).await,
        Ok(Some(channel_id))
    );
}

#[tokio::test]
async fn a_hash_the_chain_never_saw_is_dropped_after_a_restart_and_only_one_open_lands() {
    let f = ChainFixture::new().await;
    let payee = Address::repeat_byte(0xb1);
    let before_crash = f.adapter();
    let lost = before_crash
        .sign_open(payee, U256::from(ETH), false)
        .await
        .expect("signs");
    // The process dies after the hash was persisted, before the broadcast.
    let after_restart = f.adapter();
    let first_check = std::time::Instant::now();
    assert_eq!(
        after_restart.status_at(lost.tx_hash, first_check).await,
        Ok(ChannelStatus::Pending { confirmations: 0 }),
        "one answer without it is not a drop"
    );
    assert_eq!(
        after_restart
            .status_at(lost.tx_hash, first_check + DEFAULT_DROPPED_GRACE)
            .await,
        Ok(ChannelStatus::Dropped),
        "unseen for the grace, and nothing of ours is pending"
    );
    let reopened = after_restart
        .sign_open(payee, U256::from(ETH), false)
        .await
        .expect("signs");
    assert_eq!(
        reopened.nonce, lost.nonce,
        "the new open takes the same nonce"
    );
    after_restart
        .broadcast(reopened.tx_hash)
        .await
        .expect("broadcast");
    f.anvil.mine(CONFIRMATIONS).await;
    assert!(matches!(
        after_restart.status(reopened.tx_hash).await,
        Ok(ChannelStatus::Confirmed { .. })
    ));
    // The lost transaction can never land now: its nonce is spent.
    match before_crash.broadcast(lost.tx_hash).await {
        Err(Fault::Permanent(reason)) => assert!(reason.contains("refused"), "{reason}"),
        other => panic!("the stale open must be refused, got {other:?}"),
    }
    f.anvil.mine(1).await;
    assert_eq!(
        f.open_count().await,
        U256::from(1),
        "exactly one open on chain"
    );
}

#[tokio::test]
async fn a_restarted_adapter_follows_a_broadcast_open_to_its_confirmation() {
    let f = ChainFixture::new().await;
    let payee = Address::repeat_byte(0xb2);
    let tx = f
        .adapter()
        .open_channel(&peer(payee, true), None)
        .await
        .expect("signs");
    f.adapter().broadcast_open(&tx).await.unwrap_err();
    // Only the adapter that signed holds the transaction: sign and send with one instance.
    let first = f.adapter();
    let tx = first
        .open_channel(&peer(payee, true), None)
        .await
        .expect("signs");
    first.broadcast_open(&tx).await.expect("broadcast");
    drop(first);
    let second = f.adapter();
    assert_eq!(
        second.channel_status(&tx).await,
        Ok(ChannelStatus::Pending { confirmations: 0 })
    );
    f.anvil.mine(CONFIRMATIONS).await;
    assert!(matches!(
        second.channel_status(&tx).await,
        Ok(ChannelStatus::Confirmed { .. })
    ));
    assert_eq!(f.open_count().await, U256::from(1));
}

#[tokio::test]
async fn a_reorg_that_drops_the_open_is_detected() {
    let f = ChainFixture::new().await;
    let adapter = f.adapter();
    let payee = Address::repeat_byte(0xb3);
    let tx = adapter
        .open_channel(&peer(payee, true), None)
        .await
        .expect("signs");
    adapter.broadcast_open(&tx).await.expect("broadcast");
    f.anvil.mine(2).await;
    assert_eq!(
        adapter.channel_status(&tx).await,
        Ok(ChannelStatus::Pending { confirmations: 2 })
    );
    f.anvil.reorg(2).await;
    let first_check = std::time::Instant::now();
    let hash: B256 = tx.parse().unwrap();
    assert_eq!(
        adapter.status_at(hash, first_check).await,
        Ok(ChannelStatus::Pending { confirmations: 0 }),
        "the pool may take it back: not dropped at once"
    );
    assert_eq!(
        adapter
            .status_at(hash, first_check + DEFAULT_DROPPED_GRACE)
            .await,
        Ok(ChannelStatus::Dropped)
    );
    assert_eq!(f.open_count().await, U256::ZERO);
    assert_eq!(adapter.find_channel(&peer(payee, true)).await, Ok(None));
    let reopened = adapter
        .sign_open(payee, U256::from(ETH), false)
        .await
        .expect("signs");
    assert_eq!(
        reopened.nonce, 0,
        "the new open takes the dropped open's nonce"
    );
}

#[tokio::test]
async fn rpc_trouble_while_waiting_is_the_nodes_own_fault_and_the_wait_goes_on() {
    let f = ChainFixture::new().await;
    let proxy = RpcProxy::start(&f.anvil.url).await;
    let adapter = f.adapter_at(&proxy.url, policy());
    let payee = Address::repeat_byte(0xb4);
    let tx = adapter
        .open_channel(&peer(payee, true), None)
        .await
        .expect("signs");
    adapter.broadcast_open(&tx).await.expect("broadcast");
    f.anvil.mine(1).await;
    assert_eq!(
        adapter.channel_status(&tx).await,
        Ok(ChannelStatus::Pending { confirmations: 1 })
    );
    proxy.stop();
    assert!(
        matches!(adapter.channel_status(&tx).await, Err(Fault::Local(_))),
        "an unreachable endpoint is the node's own fault"
    );
    f.anvil.mine(CONFIRMATIONS).await;
    assert!(matches!(
        adapter.channel_status(&tx).await,
        Err(Fault::Local(_))
    ));
    proxy.resume();
    assert!(matches!(
        adapter.channel_status(&tx).await,
        Ok(ChannelStatus::Confirmed { .. })
    ));
}

#[tokio::test]
async fn only_an_open_channel_to_the_peer_with_balance_and_time_left_is_used() {
    let f = ChainFixture::new().await;
    let adapter = f.adapter();
    let payee = Address::repeat_byte(0xb5);
    let (_, now) = f.anvil.head().await;
    let day = 24 * 3600;
    let open = |to: Address, deposit: u128, lifetime: u64| {
        let anvil = &f.anvil;
        let key = &f.key;
        let contract = f.contract;
        async move {
            let receipt = anvil
                .transact(
                    key,
                    contract,
                    U256::from(deposit),
                    PC::openCall {
                        payee: to,
                        expiry: now + lifetime,
                    },
                )
                .await;
            assert!(receipt.status());
        }
    };
    // Too little deposit, too little time left, another payee: none is usable.
    open(payee, ETH / 20, 30 * day).await;
    open(payee, ETH, day / 2).await;
    open(Address::repeat_byte(0xee), ETH, 30 * day).await;
    assert_eq!(adapter.find_channel(&peer(payee, true)).await, Ok(None));
    open(payee, ETH, 30 * day).await;
    let ids = f
        .anvil
        .view(
            f.contract,
            PC::channelsBetweenCall {
                payer: f.key.address(),
                payee,
            },
        )
        .await;
    assert_eq!(
        adapter.find_channel(&peer(payee, true)).await,
        Ok(Some(format!("{:#x}", ids[2])))
    );
    // An announcement without a usable EVM address is the peer's fault, named.
    let mut bad = peer(payee, true);
    bad.base_address = Some("0x1234".into());
    match adapter.find_channel(&bad).await {
        Err(Fault::Permanent(reason)) => assert!(reason.contains("base-address"), "{reason}"),
        other => panic!("expected a permanent fault, got {other:?}"),
    }
}

#[tokio::test]
async fn auto_open_covers_followed_peers_within_both_caps() {
    let f = ChainFixture::new().await;
    let off = f.adapter();
    let payee = Address::repeat_byte(0xb6);
    assert_eq!(
        off.request_channel(&peer(payee, true)).await,
        Ok(ChannelRequest::AwaitingOperator),
        "auto-open is off unless configured"
    );
    let mut capped = policy();
    capped.deposit = U256::from(2 * ETH);
    capped.auto_open = Some((U256::from(2 * ETH), U256::from(5 * ETH)));
    let auto = f.adapter_at(&f.anvil.url, capped.clone());
    assert_eq!(
        auto.request_channel(&peer(payee, false)).await,
        Ok(ChannelRequest::AwaitingOperator),
        "only followed peers"
    );
    let Ok(ChannelRequest::Opened { tx_hash }) = auto.request_channel(&peer(payee, true)).await
    else {
        panic!("a followed peer within the caps gets a channel");
    };
    auto.broadcast_open(&tx_hash).await.expect("broadcast");
    // Signed or in flight counts against the total cap before it is mined: 2 + 2 ≤ 5.
    let Ok(ChannelRequest::Opened { tx_hash: second }) = auto
        .request_channel(&peer(Address::repeat_byte(0xb7), true))
        .await
    else {
        panic!("a second channel fits under the total cap");
    };
    auto.broadcast_open(&second).await.expect("broadcast");
    assert_eq!(
        auto.request_channel(&peer(Address::repeat_byte(0xb8), true))
            .await,
        Ok(ChannelRequest::AwaitingOperator),
        "2 + 2 + 2 would pass the total cap of 5 (pending opens count)"
    );
    // The operator sees the cap as the check counts it: the two opens in flight.
    let status = auto
        .channel_policy()
        .await
        .expect("the adapter tells its policy");
    assert_eq!(
        (
            status.auto_open,
            status.per_channel_cap_wei,
            status.total_cap_wei
        ),
        (true, Some(2 * ETH), Some(5 * ETH))
    );
    assert_eq!(
        (status.total_cap_used_wei, status.total_cap_left_wei),
        (Some(4 * ETH), Some(ETH)),
        "{status:?}"
    );
    f.anvil.mine(1).await;
    let locked = f
        .anvil
        .view(
            f.contract,
            PC::lockedByCall {
                payer: f.key.address(),
            },
        )
        .await;
    assert_eq!(locked, U256::from(4 * ETH));
    // After a restart, what is locked on chain still counts.
    let restarted = f.adapter_at(&f.anvil.url, capped.clone());
    assert_eq!(
        restarted
            .request_channel(&peer(Address::repeat_byte(0xb8), true))
            .await,
        Ok(ChannelRequest::AwaitingOperator)
    );
    let status = restarted.channel_policy().await.unwrap();
    assert_eq!(
        (status.total_cap_used_wei, status.total_cap_left_wei),
        (Some(4 * ETH), Some(ETH)),
        "what is locked on chain: {status:?}"
    );
    let status = off.channel_policy().await.unwrap();
    assert_eq!(
        (
            status.auto_open,
            status.total_cap_wei,
            status.total_cap_left_wei
        ),
        (false, None, None),
        "auto-open off: no cap to spend"
    );
    // A deposit above the per-channel cap is never opened automatically.
    let mut big = capped;
    big.deposit = U256::from(3 * ETH);
    big.auto_open = Some((U256::from(2 * ETH), U256::from(100 * ETH)));
    assert_eq!(
        f.adapter_at(&f.anvil.url, big)
            .request_channel(&peer(Address::repeat_byte(0xb9), true))
            .await,
        Ok(ChannelRequest::AwaitingOperator)
    );
}

#[tokio::test]
async fn opens_asked_together_are_priced_side_by_side_and_take_their_nonces_in_turn() {
    let f = ChainFixture::new().await;
    // Every gas estimate is held at the endpoint until all three opens have asked for
    // one: only choosing the nonce and signing are one open at a time, so none of the
    // three waits for another's estimate (on a remote endpoint, each such wait is a round
    // trip more per open, for every open behind it).
    let gate = SendGate::holding(&f.anvil.url, "eth_estimateGas").await;
    gate.close();
    let mut auto = policy();
    auto.auto_open = Some((U256::from(ETH), U256::from(10 * ETH)));
    // RPC calls wait longer than the test does: a held estimate cannot time out and let
    // the next open through.
    let adapter = std::sync::Arc::new(EvmChannels::new(
        btp_nips_node::chain::adapter::http_provider(&gate.url).expect("url"),
        f.key.clone(),
        CHAIN_ID,
        f.contract,
        CONFIRMATIONS,
        std::time::Duration::from_secs(120),
        auto,
    ));
    let payees = [0xc1, 0xc2, 0xc3].map(Address::repeat_byte);
    let opens: Vec<_> = payees
        .iter()
        .map(|payee| {
            let (adapter, peer) = (adapter.clone(), peer(*payee, true));
            tokio::spawn(async move { adapter.request_channel(&peer).await })
        })
        .collect();
    let side_by_side = tokio::time::timeout(std::time::Duration::from_secs(20), gate.held(3))
        .await
        .is_ok();
    gate.open();
    assert!(
        side_by_side,
        "the three opens asked for their gas estimates at once (one at a time, each waits for the one before)"
    );
    let mut hashes = Vec::new();
    for open in opens {
        match open.await.expect("the open's task") {
            Ok(ChannelRequest::Opened { tx_hash }) => hashes.push(tx_hash),
            other => panic!("each followed peer within the caps gets an open: {other:?}"),
        }
    }
    for tx in &hashes {
        adapter.broadcast_open(tx).await.expect("broadcast");
    }
    let mut nonces: Vec<u64> = Vec::new();
    for tx in &hashes {
        let sent = f.chain_tx(tx).await.expect("in the pool");
        nonces.push(alloy::consensus::Transaction::nonce(&sent));
    }
    nonces.sort_unstable();
    assert_eq!(nonces, [0, 1, 2], "one nonce each, no gap");
    f.anvil.mine(CONFIRMATIONS).await;
    for tx in &hashes {
        assert!(
            matches!(
                adapter.channel_status(tx).await,
                Ok(ChannelStatus::Confirmed { .. })
            ),
            "every open lands"
        );
    }
    assert_eq!(f.open_count().await, U256::from(3));
}

#[tokio::test]
async fn startup_checks_name_a_wrong_chain_id_or_a_missing_contract() {
    let f = ChainFixture::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("evm.key");
    std::fs::write(
        &key_file,
        format!("{}\n", alloy::hex::encode(f.key.to_bytes())),
    )
    .expect("write key");
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("a private key file");
    let yaml = |chain_id: u64, contract: Address| {
        format!(
            "chain:\n  enabled: true\n  rpc_url: \"{}\"\n  chain_id: {chain_id}\n  contract_address: \"{contract}\"\n  key_file: \"{}\"\n",
            f.anvil.url,
            key_file.display()
        )
    };
    let settings = |chain_id, contract| {
        Settings::from_yaml_overrides(&yaml(chain_id, contract))
            .expect("valid settings")
            .chain
    };
    let adapter = EvmChannels::connect(&settings(CHAIN_ID, f.contract))
        .await
        .expect("the right chain and contract");
    assert_eq!(adapter.address(), f.key.address());
    match EvmChannels::connect(&settings(8453, f.contract)).await {
        Err(ChainError::Config { key, reason }) => {
            assert_eq!(key, "chain.chain_id");
            assert!(reason.contains("31337"), "{reason}");
        }
        other => panic!("expected a chain id error, got {:?}", other.err()),
    }
    match EvmChannels::connect(&settings(CHAIN_ID, Address::repeat_byte(0x42))).await {
        Err(ChainError::Contract { reason, .. }) => {
            assert!(reason.contains("no contract"), "{reason}")
        }
        other => panic!("expected a contract error, got {:?}", other.err()),
    }
    std::fs::write(&key_file, "not a key").expect("write");
    match EvmChannels::connect(&settings(CHAIN_ID, f.contract)).await {
        Err(ChainError::Config { key, reason }) => {
            assert_eq!(key, "chain.key_file");
            assert!(!reason.contains("not a key"), "the key is never echoed");
        }
        other => panic!("expected a key error, got {:?}", other.err()),
    }
}
