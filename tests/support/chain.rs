//! A real local chain for the chain tests: an anvil process on 127.0.0.1 with mining off
//! (`--no-mining`: a block exists only when a test mines it with `anvil_mine`), accounts
//! funded with `anvil_setBalance` for keys the tests generate, the contract deployed from
//! the committed artifact, and an RPC proxy a test can take down and bring back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::BlockId;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use btp_nips_node::chain::adapter::http_provider;
use btp_nips_node::chain::anvil::{find_anvil, AnvilChild, AnvilOptions};
use btp_nips_node::chain::contract;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const CHAIN_ID: u64 = btp_nips_node::chain::anvil::ANVIL_CHAIN_ID;
/// One ether, in wei.
pub const ETH: u128 = 1_000_000_000_000_000_000;

/// A running anvil; killed when dropped.
pub struct Anvil {
    child: AnvilChild,
    pub url: String,
    pub provider: DynProvider,
}

impl Anvil {
    /// Starts anvil on a free loopback port, mining only on demand.
    pub fn start() -> Anvil {
        let bin = find_anvil().unwrap_or_else(|e| {
            panic!("{e} (.ci/run and scripts/test run `npm ci` in contracts/)")
        });
        let child = AnvilChild::start(&bin, &AnvilOptions::default()).expect("anvil starts");
        let url = child.url.clone();
        let provider = http_provider(&url).expect("anvil URL parses");
        Anvil {
            child,
            url,
            provider,
        }
    }

    pub async fn mine(&self, blocks: u64) {
        let _: serde_json::Value = self
            .provider
            .raw_request("anvil_mine".into(), (U256::from(blocks),))
            .await
            .expect("anvil_mine");
    }

    /// Mines one block with the given timestamp.
    pub async fn mine_at(&self, timestamp: u64) {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_setNextBlockTimestamp".into(), (U256::from(timestamp),))
            .await
            .expect("evm_setNextBlockTimestamp");
        self.mine(1).await;
    }

    /// Replaces the newest `depth` blocks with empty ones (their transactions are gone).
    pub async fn reorg(&self, depth: u64) {
        let _: serde_json::Value = self
            .provider
            .raw_request(
                "anvil_reorg".into(),
                (depth, Vec::<(serde_json::Value, u64)>::new()),
            )
            .await
            .expect("anvil_reorg");
    }

    pub async fn set_balance(&self, who: Address, wei: u128) {
        let _: serde_json::Value = self
            .provider
            .raw_request("anvil_setBalance".into(), (who, U256::from(wei)))
            .await
            .expect("anvil_setBalance");
    }

    /// A fresh key with `eth` ether.
    pub async fn funded_key(&self, eth: u128) -> PrivateKeySigner {
        let key = PrivateKeySigner::random();
        self.set_balance(key.address(), eth * ETH).await;
        key
    }

    pub async fn head(&self) -> (u64, u64) {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .expect("latest block")
            .expect("a latest block exists");
        (block.header.number, block.header.timestamp)
    }

    pub async fn balance(&self, who: Address) -> U256 {
        self.provider.get_balance(who).await.expect("balance")
    }

    /// Signs and sends a transaction from `from` (not mined: call `mine`).
    pub async fn send(
        &self,
        from: &PrivateKeySigner,
        to: Option<Address>,
        value: U256,
        input: Vec<u8>,
    ) -> B256 {
        let nonce = self
            .provider
            .get_transaction_count(from.address())
            .pending()
            .await
            .expect("nonce");
        let mut tx = TransactionRequest::default()
            .with_from(from.address())
            .with_value(value)
            .with_input(input)
            .with_nonce(nonce)
            .with_chain_id(CHAIN_ID)
            .with_gas_limit(3_000_000)
            .with_max_fee_per_gas(20_000_000_000)
            .with_max_priority_fee_per_gas(1_000_000_000);
        match to {
            Some(to) => tx.set_to(to),
            None => tx.set_create(),
        }
        let envelope = tx
            .build(&EthereumWallet::from(from.clone()))
            .await
            .expect("signs");
        use alloy::eips::eip2718::Encodable2718;
        *self
            .provider
            .send_raw_transaction(&envelope.encoded_2718())
            .await
            .expect("anvil accepts the transaction")
            .tx_hash()
    }

    pub async fn receipt(&self, tx: B256) -> TransactionReceipt {
        self.provider
            .get_transaction_receipt(tx)
            .await
            .expect("receipt call")
            .expect("the transaction is mined")
    }

    /// Deploys the contract from the committed artifact (one block).
    pub async fn deploy(&self, deployer: &PrivateKeySigner) -> Address {
        let code = contract::creation_bytecode().expect("artifact has bytecode");
        self.deploy_code(deployer, code.to_vec()).await
    }

    /// Deploys creation code (constructor arguments appended) in one block.
    pub async fn deploy_code(&self, deployer: &PrivateKeySigner, code: Vec<u8>) -> Address {
        let tx = self.send(deployer, None, U256::ZERO, code).await;
        self.mine(1).await;
        let receipt = self.receipt(tx).await;
        assert!(receipt.status(), "deployment succeeds");
        receipt.contract_address.expect("a contract address")
    }

    /// Calls a view function of `at` at the latest block.
    pub async fn view<C: SolCall>(&self, at: Address, call: C) -> C::Return {
        let tx = TransactionRequest::default()
            .with_to(at)
            .with_input(call.abi_encode());
        let out = self
            .provider
            .call(tx)
            .block(BlockId::latest())
            .await
            .expect("view call");
        C::abi_decode_returns(&out).expect("decodes")
    }

    /// Sends `call` from `from`, mines it, and returns its receipt.
    pub async fn transact<C: SolCall>(
        &self,
        from: &PrivateKeySigner,
        at: Address,
        value: U256,
        call: C,
    ) -> TransactionReceipt {
        let tx = self.send(from, Some(at), value, call.abi_encode()).await;
        self.mine(1).await;
        self.receipt(tx).await
    }

    /// The 4-byte selector of the error `call` from `from` reverts with at the latest block
    /// (replayed with `eth_call`), or `None` if it would succeed.
    pub async fn revert_selector<C: SolCall>(
        &self,
        from: Address,
        at: Address,
        value: U256,
        call: &C,
        block: BlockId,
    ) -> Option<[u8; 4]> {
        let tx = TransactionRequest::default()
            .with_from(from)
            .with_to(at)
            .with_value(value)
            .with_input(call.abi_encode());
        match self.provider.call(tx).block(block).await {
            Ok(_) => None,
            Err(e) => {
                let payload = e
                    .as_error_resp()
                    .unwrap_or_else(|| panic!("a revert, not a transport error: {e}"));
                let data: Bytes = payload
                    .as_revert_data()
                    .unwrap_or_else(|| panic!("revert data in {payload:?}"));
                Some(data[..4].try_into().expect("a selector"))
            }
        }
    }
}

/// A TCP proxy in front of the RPC endpoint that a test can take down (every connection
/// is cut and new ones are refused at once) and bring back: an RPC outage, as the node sees it.
pub struct RpcProxy {
    pub url: String,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl RpcProxy {
    pub async fn start(upstream: &str) -> RpcProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http URL")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (accept_up, accept_cut) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut_rx = accept_cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        RpcProxy { url, up, cut }
    }

    /// Takes the endpoint down: open connections are cut, new ones closed at once.
    pub fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn resume(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// An HTTP proxy in front of the RPC endpoint that can hold every call of one method,
/// `eth_sendRawTransaction` unless told otherwise (each is kept until [`SendGate::open`]),
/// while all other calls pass: a transaction on its way to the pool, caught at the moment
/// it is neither held by the sender nor known to the chain; or calls that must be able to
/// arrive side by side, counted while they are held.
pub struct SendGate {
    pub url: String,
    closed: watch::Sender<bool>,
    held: watch::Sender<usize>,
}

impl SendGate {
    pub async fn start(upstream: &str) -> SendGate {
        Self::holding(upstream, "eth_sendRawTransaction").await
    }

    /// A gate that holds the calls of `method` instead.
    pub async fn holding(upstream: &str, method: &'static str) -> SendGate {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http URL")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let url = format!("http://{}", listener.local_addr().expect("gate address"));
        let (closed, _) = watch::channel(false);
        let (held, _) = watch::channel(0usize);
        let (gate_closed, gate_held) = (closed.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, closed, held) =
                    (upstream.clone(), gate_closed.clone(), gate_held.clone());
                tokio::spawn(async move {
                    let _ = Self::serve(client, &upstream, method, closed, held).await;
                });
            }
        });
        SendGate { url, closed, held }
    }

    /// One client connection: each request goes to the upstream connection in turn, a
    /// call of `method` waiting first while the gate is closed.
    async fn serve(
        client: TcpStream,
        upstream: &str,
        method: &str,
        closed: watch::Sender<bool>,
        held: watch::Sender<usize>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncWriteExt, BufReader};
        let mut client = BufReader::new(client);
        let mut server = BufReader::new(TcpStream::connect(upstream).await?);
        loop {
            let Some(request) = read_http_message(&mut client).await? else {
                return Ok(());
            };
            if String::from_utf8_lossy(&request).contains(method) {
                let mut open = closed.subscribe();
                if *open.borrow_and_update() {
                    held.send_modify(|n| *n += 1);
                    while *open.borrow_and_update() {
                        if open.changed().await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            server.get_mut().write_all(&request).await?;
            let Some(response) = read_http_message(&mut server).await? else {
                return Ok(());
            };
            client.get_mut().write_all(&response).await?;
        }
    }

    /// Holds every call of the method from now on.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Lets the held calls (and all later ones) through.
    pub fn open(&self) {
        self.closed.send_replace(false);
    }

    /// Waits until `n` calls in all have been held.
    pub async fn held(&self, n: usize) {
        let mut held = self.held.subscribe();
        held.wait_for(|held| *held >= n).await.expect("gate alive");
    }
}

/// Reads one HTTP/1.1 message (headers and a `Content-Length` body), or `None` at EOF.
pub async fn read_http_message<R: tokio::io::AsyncBufRead + Unpin>(
    from: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut message = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if from.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        message.extend_from_slice(line.as_bytes());
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().expect("a numeric Content-Length");
        }
        if line == "\r\n" {
            break;
        }
    }
    let start = message.len();
    message.resize(start + length, 0);
    from.read_exact(&mut message[start..]).await?;
    Ok(Some(message))
}

/// A local chain with the contract deployed and a funded payer key: what the adapter tests
/// share. Each test file adds the adapter it needs with [`ChainFixture::adapter_with`].
pub struct ChainFixture {
    pub anvil: Anvil,
    pub contract: Address,
    pub key: PrivateKeySigner,
}

impl ChainFixture {
    pub async fn new() -> ChainFixture {
        let anvil = Anvil::start();
        let deployer = anvil.funded_key(10).await;
        let contract = anvil.deploy(&deployer).await;
        let key = anvil.funded_key(100).await;
        ChainFixture {
            anvil,
            contract,
            key,
        }
    }

    /// 1 ETH per channel for 30 days; a channel is usable with 0.1 ETH and a day left;
    /// auto-open caps `(per_channel, total)` in wei, if any.
    pub fn policy(auto_open: Option<(u128, u128)>) -> btp_nips_node::chain::ChannelPolicy {
        btp_nips_node::chain::ChannelPolicy {
            deposit: U256::from(ETH),
            duration: Duration::from_secs(30 * 24 * 3600),
            min_balance: U256::from(ETH / 10),
            min_time_left: Duration::from_secs(24 * 3600),
            auto_open: auto_open.map(|(one, total)| (U256::from(one), U256::from(total))),
        }
    }

    /// An adapter for the payer's key through `url`, as a fresh process would build it.
    pub fn adapter_with(
        &self,
        url: &str,
        confirmations: u64,
        policy: btp_nips_node::chain::ChannelPolicy,
    ) -> btp_nips_node::chain::EvmChannels {
        btp_nips_node::chain::EvmChannels::new(
            http_provider(url).expect("url"),
            self.key.clone(),
            CHAIN_ID,
            self.contract,
            confirmations,
            Duration::from_secs(5),
            policy,
        )
    }

    /// The payer's key in `path` as an operator keeps it (hex, mode 0600).
    pub fn write_key_file(&self, path: &std::path::Path) {
        std::fs::write(path, alloy::hex::encode(self.key.to_bytes())).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    /// The `chain` section of a node's YAML on this chain, paying with the key in
    /// `key_file`: `confirmations` per open, `deposit_wei` per channel, auto-open off (a
    /// channel waits for the operator).
    pub fn chain_section(
        &self,
        key_file: &std::path::Path,
        confirmations: u64,
        deposit_wei: u128,
    ) -> String {
        format!(
            "chain:\n  enabled: true\n  rpc_url: \"{}\"\n  chain_id: {CHAIN_ID}\n  \
             contract_address: \"{}\"\n  confirmations: {confirmations}\n  key_file: \"{}\"\n  \
             deposit_wei: \"{deposit_wei}\"\n  min_balance_wei: \"{deposit_wei}\"\n",
            self.anvil.url,
            self.contract,
            key_file.display()
        )
    }

    /// Wei the payer has locked in channels not yet closed, as the contract counts it.
    pub async fn locked_wei(&self) -> U256 {
        self.anvil
            .view(
                self.contract,
                contract::PaymentChannels::lockedByCall {
                    payer: self.key.address(),
                },
            )
            .await
    }

    /// Channels the payer has opened, as the contract counts them.
    pub async fn open_count(&self) -> U256 {
        self.anvil
            .view(
                self.contract,
                contract::PaymentChannels::openCountCall {
                    payer: self.key.address(),
                },
            )
            .await
    }

    /// The transaction `tx` as the chain knows it (pool or block), if it does.
    pub async fn chain_tx(&self, tx: &str) -> Option<alloy::rpc::types::Transaction> {
        let hash: B256 = tx.parse().expect("hash");
        self.anvil
            .provider
            .get_transaction_by_hash(hash)
            .await
            .expect("rpc")
    }
}
