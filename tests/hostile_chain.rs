//! The chain adapter against a hostile or unreliable world, on a real local chain (anvil,
//! `--no-mining`): followed peers asking for channels all at once must not lock more than
//! the auto-open total cap; an RPC endpoint that misses a transaction once (a load
//! balancer, a reorg before the pool takes it back) must not make the node open twice; and
//! a chain key file others can read is refused.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use btp_nips_node::chain::contract::PaymentChannels as PC;
use btp_nips_node::chain::EvmChannels;
use btp_nips_node::ports::{ChannelPort, ChannelRequest, ChannelStatus, PeerTarget};
use futures::future::join_all;
use support::chain::{read_http_message, ChainFixture, CHAIN_ID, ETH};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const CONFIRMATIONS: u64 = 2;

impl ChainFixture {
    /// An adapter paying 1 ETH per channel, with the auto-open caps `(per_channel, total)`.
    fn adapter(&self, url: &str, auto_open: Option<(u128, u128)>) -> Arc<EvmChannels> {
        Arc::new(self.adapter_with(url, CONFIRMATIONS, ChainFixture::policy(auto_open)))
    }

    async fn locked(&self) -> U256 {
        self.anvil
            .view(
                self.contract,
                PC::lockedByCall {
                    payer: self.key.address(),
                },
            )
            .await
    }
}

fn peer(n: u8) -> PeerTarget {
    PeerTarget {
        nostr_pubkey: format!("{:0>64}", n),
        ilp_address: None,
        endpoint: None,
        base_address: Some(Address::repeat_byte(n).to_string()),
        followed: true,
        event_cursor: None,
    }
}

/// A JSON-RPC forwarder in front of the endpoint that can answer "unknown" (`null`) for a
/// transaction the endpoint does know: `eth_getTransactionReceipt` and
/// `eth_getTransactionByHash` for a hidden hash get `null` as many times as asked, every
/// other call passes through.
struct HidingProxy {
    url: String,
    /// Lower-case `0x…` hash → (method → how many more answers to hide).
    hidden: Arc<Mutex<HashMap<String, HashMap<&'static str, usize>>>>,
}

const HIDDEN_METHODS: [&str; 2] = ["eth_getTransactionReceipt", "eth_getTransactionByHash"];

impl HidingProxy {
    async fn start(upstream: &str) -> HidingProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http URL")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let hidden: Arc<Mutex<HashMap<String, HashMap<&'static str, usize>>>> = Arc::default();
        let serving = hidden.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, hidden) = (upstream.clone(), serving.clone());
                tokio::spawn(async move {
                    let _ = Self::serve(client, &upstream, hidden).await;
                });
            }
        });
        HidingProxy { url, hidden }
    }

    /// The next `times` answers of each lookup method about `tx` say it is unknown.
    fn hide(&self, tx: &str, times: usize) {
        let per_method = HIDDEN_METHODS.iter().map(|m| (*m, times)).collect();
        self.hidden
            .lock()
            .unwrap()
            .insert(tx.to_ascii_lowercase(), per_method);
    }

    /// `null` for `request` if it asks about a hidden transaction (and counts it).
    fn hide_answer(
        hidden: &Mutex<HashMap<String, HashMap<&'static str, usize>>>,
        request: &[u8],
    ) -> Option<Vec<u8>> {
        let body_at = request.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let call: serde_json::Value = serde_json::from_slice(&request[body_at..]).ok()?;
        let method = HIDDEN_METHODS
            .into_iter()
            .find(|m| call["method"].as_str() == Some(*m))?;
        let tx = call["params"][0].as_str()?.to_ascii_lowercase();
        let mut hidden = hidden.lock().unwrap();
        let left = hidden.get_mut(&tx)?.get_mut(method)?;
        if *left == 0 {
            return None;
        }
        *left -= 1;
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": call["id"], "result": null}).to_string();
        Some(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    async fn serve(
        client: TcpStream,
        upstream: &str,
        hidden: Arc<Mutex<HashMap<String, HashMap<&'static str, usize>>>>,
    ) -> std::io::Result<()> {
        let mut client = BufReader::new(client);
        let mut server = BufReader::new(TcpStream::connect(upstream).await?);
        loop {
            let Some(request) = read_http_message(&mut client).await? else {
                return Ok(());
            };
            let response = match Self::hide_answer(&hidden, &request) {
                Some(hidden) => hidden,
                None => {
                    server.get_mut().write_all(&request).await?;
                    let Some(response) = read_http_message(&mut server).await? else {
                        return Ok(());
                    };
                    response
                }
            };
            client.get_mut().write_all(&response).await?;
        }
    }
}

/// Three followed peers need channels at the same moment and the total cap has room for
/// one more deposit (1 ETH locked on chain + 1 ETH on its way + 1 ETH = the 3 ETH cap):
/// exactly one is opened, the other two are refused.
#[tokio::test]
async fn concurrent_auto_opens_with_room_for_one_open_exactly_one() {
    let f = ChainFixture::new().await;
    let adapter = f.adapter(&f.anvil.url, Some((ETH, 3 * ETH)));
    // 1 ETH locked in a mined channel ...
    let Ok(ChannelRequest::Opened { tx_hash: mined }) = adapter.request_channel(&peer(1)).await
    else {
        panic!("the first channel fits under the cap");
    };
    adapter.broadcast_open(&mined).await.expect("broadcast");
    f.anvil.mine(CONFIRMATIONS).await;
    assert!(matches!(
        adapter.channel_status(&mined).await,
        Ok(ChannelStatus::Confirmed { .. })
    ));
    // ... and 1 ETH on its way.
    let Ok(ChannelRequest::Opened { tx_hash: sent }) = adapter.request_channel(&peer(2)).await
    else {
        panic!("the second channel fits under the cap");
    };
    adapter.broadcast_open(&sent).await.expect("broadcast");

    let peers = [peer(3), peer(4), peer(5)];
    let answers = join_all(peers.iter().map(|p| adapter.request_channel(p))).await;
    let opened: Vec<String> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(ChannelRequest::Opened { tx_hash }) => Some(tx_hash.clone()),
            _ => None,
        })
        .collect();
    let refused = answers
        .iter()
        .filter(|a| **a == Ok(ChannelRequest::AwaitingOperator))
        .count();
    assert_eq!(opened.len(), 1, "exactly one open: {answers:?}");
    assert_eq!(
        refused, 2,
        "the other two wait for the operator: {answers:?}"
    );
    assert_eq!(adapter.stats().auto_open_refused_total_cap, 2);
    let why = adapter.last_refusal().expect("a refusal is kept");
    assert!(
        why.contains("total cap") && why.contains("chain.auto_open.total_cap_wei"),
        "the refusal names the cap: {why}"
    );

    for tx in &opened {
        adapter.broadcast_open(tx).await.expect("broadcast");
    }
    f.anvil.mine(1).await;
    assert_eq!(f.open_count().await, U256::from(3));
    assert_eq!(f.locked().await, U256::from(3 * ETH), "never above the cap");
}

/// The endpoint answers once that it knows nothing of a sent open (receipt and lookup both
/// `null`). That is not a dropped transaction: were it reported dropped, the core would
/// sign a new open (next nonce) and both would land, locking two deposits.
#[tokio::test]
async fn a_receipt_missed_once_is_not_a_drop_and_one_deposit_lands() {
    let f = ChainFixture::new().await;
    let proxy = HidingProxy::start(&f.anvil.url).await;
    let adapter = f.adapter(&proxy.url, None);
    let tx = adapter.open_channel(&peer(1), None).await.expect("signs");
    adapter.broadcast_open(&tx).await.expect("broadcast");
    proxy.hide(&tx, 1);

    let missed = adapter.channel_status(&tx).await;
    // What the core does with a drop: a new open to the same peer, broadcast at once.
    let reopened = if missed == Ok(ChannelStatus::Dropped) {
        let again = adapter.open_channel(&peer(1), None).await.expect("signs");
        adapter.broadcast_open(&again).await.expect("broadcast");
        Some(again)
    } else {
        None
    };
    f.anvil.mine(CONFIRMATIONS).await;
    assert!(matches!(
        adapter.channel_status(&tx).await,
        Ok(ChannelStatus::Confirmed { .. })
    ));
    assert_eq!(
        f.open_count().await,
        U256::from(1),
        "exactly one deposit (the re-open {reopened:?} must not land beside it)"
    );
    assert_eq!(missed, Ok(ChannelStatus::Pending { confirmations: 0 }));
    let stats = adapter.stats();
    assert_eq!((stats.receipts_missed, stats.opens_dropped), (1, 0));
}

/// The endpoint never shows a sent open that is in fact in the pool. After the grace it
/// is reported dropped; the chain has not spent its nonce, so the new open takes that
/// nonce: whichever of the two the chain takes, only one deposit lands.
#[tokio::test]
async fn an_open_unseen_past_the_grace_is_dropped_and_the_reopen_takes_its_nonce() {
    let f = ChainFixture::new().await;
    let proxy = HidingProxy::start(&f.anvil.url).await;
    let grace = Duration::from_secs(30);
    let adapter = Arc::into_inner(f.adapter(&proxy.url, None))
        .expect("one owner")
        .with_dropped_grace(grace);
    let first = adapter.open_channel(&peer(1), None).await.expect("signs");
    adapter.broadcast_open(&first).await.expect("broadcast");
    proxy.hide(&first, usize::MAX);
    let hash: B256 = first.parse().unwrap();

    let start = Instant::now();
    assert_eq!(
        adapter.status_at(hash, start).await,
        Ok(ChannelStatus::Pending { confirmations: 0 }),
        "not dropped at the first miss"
    );
    assert_eq!(
        adapter
            .status_at(hash, start + grace - Duration::from_secs(1))
            .await,
        Ok(ChannelStatus::Pending { confirmations: 0 }),
        "nor within the grace"
    );
    assert_eq!(
        adapter.status_at(hash, start + grace).await,
        Ok(ChannelStatus::Dropped)
    );

    // The core opens again, to the same peer, and to another one meanwhile.
    let again = adapter
        .sign_open(Address::repeat_byte(1), U256::from(ETH), false)
        .await
        .expect("signs");
    assert_eq!(again.nonce, 0, "the dropped open's nonce");
    let other = adapter
        .sign_open(Address::repeat_byte(2), U256::from(ETH), false)
        .await
        .expect("signs");
    assert_eq!(
        other.nonce, 1,
        "a fresh nonce once the dropped one is taken"
    );
    let stats = adapter.stats();
    assert_eq!((stats.opens_dropped, stats.dropped_nonces_reused), (1, 1));
    // Sent or refused as a replacement: either way the chain takes one at nonce 0.
    let _ = adapter.broadcast(again.tx_hash).await;
    adapter.broadcast(other.tx_hash).await.expect("broadcast");
    f.anvil.mine(1).await;
    assert_eq!(
        f.open_count().await,
        U256::from(2),
        "one open at nonce 0 (the dropped one or its replacement) and one at nonce 1"
    );
    let to_first = f
        .anvil
        .view(
            f.contract,
            PC::channelsBetweenCall {
                payer: f.key.address(),
                payee: Address::repeat_byte(1),
            },
        )
        .await;
    assert_eq!(to_first.len(), 1, "one deposit to the first peer");
}

/// The endpoint misses a sent open whose nonce another transaction of ours has already
/// spent: after the grace it is dropped for good, and the next open takes a fresh nonce.
#[tokio::test]
async fn an_open_whose_nonce_is_spent_is_dropped_after_the_grace_with_no_reuse() {
    let f = ChainFixture::new().await;
    let proxy = HidingProxy::start(&f.anvil.url).await;
    let grace = Duration::from_secs(30);
    let adapter = Arc::into_inner(f.adapter(&proxy.url, None))
        .expect("one owner")
        .with_dropped_grace(grace);
    let lost = adapter
        .sign_open(Address::repeat_byte(1), U256::from(ETH), false)
        .await
        .expect("signs");
    adapter.broadcast(lost.tx_hash).await.expect("broadcast");
    proxy.hide(&format!("{:#x}", lost.tx_hash), usize::MAX);
    // Another transaction of ours takes nonce 0 (a higher fee replaces the open).
    let spender = {
        use alloy::eips::eip2718::Encodable2718;
        use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
        let tx = alloy::rpc::types::TransactionRequest::default()
            .with_from(f.key.address())
            .with_to(f.key.address())
            .with_value(U256::ZERO)
            .with_nonce(lost.nonce)
            .with_chain_id(CHAIN_ID)
            .with_gas_limit(21_000)
            .with_max_fee_per_gas(1_000_000_000_000)
            .with_max_priority_fee_per_gas(500_000_000_000);
        let envelope = tx
            .build(&EthereumWallet::from(f.key.clone()))
            .await
            .expect("signs");
        *f.anvil
            .provider
            .send_raw_transaction(&envelope.encoded_2718())
            .await
            .expect("the replacement is accepted")
            .tx_hash()
    };
    f.anvil.mine(1).await;
    assert!(f.anvil.receipt(spender).await.status(), "nonce 0 is spent");

    let start = Instant::now();
    assert_eq!(
        adapter.status_at(lost.tx_hash, start).await,
        Ok(ChannelStatus::Pending { confirmations: 0 })
    );
    assert_eq!(
        adapter.status_at(lost.tx_hash, start + grace).await,
        Ok(ChannelStatus::Dropped)
    );
    let next = adapter
        .sign_open(Address::repeat_byte(1), U256::from(ETH), false)
        .await
        .expect("signs");
    assert_eq!(next.nonce, 1, "the spent nonce is not reused");
    assert_eq!(adapter.stats().dropped_nonces_reused, 0);
    assert_eq!(f.open_count().await, U256::ZERO);
}

/// An automatic open that passes the cap and then fails to sign (no funds for gas)
/// leaves no reservation behind: once funded, the same room opens a channel.
#[tokio::test]
async fn a_failed_auto_open_releases_its_reservation() {
    let f = ChainFixture::new().await;
    f.anvil.set_balance(f.key.address(), 0).await;
    let adapter = f.adapter(&f.anvil.url, Some((ETH, ETH)));
    assert_eq!(
        adapter.request_channel(&peer(1)).await,
        Ok(ChannelRequest::AwaitingOperator),
        "no funds: signing fails"
    );
    assert_eq!(adapter.stats().auto_open_refused_total_cap, 0);
    f.anvil.set_balance(f.key.address(), 10 * ETH).await;
    assert!(matches!(
        adapter.request_channel(&peer(1)).await,
        Ok(ChannelRequest::Opened { .. })
    ));
    assert!(
        matches!(
            adapter.request_channel(&peer(2)).await,
            Ok(ChannelRequest::AwaitingOperator)
        ),
        "and the cap is full after one"
    );
}

/// `chain.dropped_grace_seconds` is bounded and named when out of bounds.
#[test]
fn the_dropped_grace_is_a_bounded_setting() {
    use btp_nips_node::config::Settings;
    let default = Settings::from_yaml_overrides("").expect("defaults");
    assert_eq!(default.chain.dropped_grace, Duration::from_secs(120));
    for bad in [0, 3601] {
        let err =
            Settings::from_yaml_overrides(&format!("chain:\n  dropped_grace_seconds: {bad}\n"))
                .expect_err("out of bounds");
        assert!(
            err.to_string().contains("chain.dropped_grace_seconds"),
            "{err}"
        );
    }
}

/// A chain key file others can read is refused, naming the file and its mode; once only
/// its owner can read it, it loads.
#[test]
fn a_chain_key_file_others_can_read_is_refused_naming_path_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("evm.key");
    let key = PrivateKeySigner::random();
    std::fs::write(&key_file, alloy::hex::encode(key.to_bytes())).expect("write key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let settings = btp_nips_node::config::Settings::from_yaml_overrides(&format!(
        "chain:\n  key_file: \"{}\"\n",
        key_file.display()
    ))
    .expect("valid settings")
    .chain;
    match btp_nips_node::chain::adapter::load_key(&settings) {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&key_file.display().to_string()),
                "{message}"
            );
            assert!(message.contains("644"), "{message}");
            assert!(message.contains("chain.key_file"), "{message}");
        }
        Ok(_) => panic!("a key file others can read must be refused"),
    }
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = btp_nips_node::chain::adapter::load_key(&settings).expect("a private key file");
    assert_eq!(loaded.address(), key.address());
}
