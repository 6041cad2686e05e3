//! The operator's `open-channel` and `deploy-contract` commands, as the binary runs them,
//! against a real local chain (anvil; the test mines the blocks the command waits for).

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use btp_nips_node::chain::contract::PaymentChannels as PC;
use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::storage::Database;
use support::chain::{Anvil, CHAIN_ID};

const BIN: &str = env!("CARGO_BIN_EXE_btp-nips-node");

struct Fixture {
    anvil: Anvil,
    key: PrivateKeySigner,
    payee: Address,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let anvil = Anvil::start();
        let key = anvil.funded_key(100).await;
        let payee = PrivateKeySigner::random().address();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("evm.key"),
            alloy::hex::encode(key.to_bytes()),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("evm.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let db = Database::open(&Self::db_url(&dir), 1).unwrap();
        let mut record = support::node::stored(1, PeerState::ChannelNeeded, true, None);
        record.base_address = Some(payee.to_string());
        db.upsert_batch(&[record]).unwrap();
        Fixture {
            anvil,
            key,
            payee,
            dir,
        }
    }

    fn db_url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("node.db").display())
    }

    /// A config file for this chain; `contract` may be empty (before deployment).
    fn config(&self, enabled: bool, contract: &str) -> String {
        let key = format!(
            "key_file: \"{}\"",
            self.dir.path().join("evm.key").display()
        );
        self.config_with_key(enabled, contract, &key)
    }

    /// As [`Fixture::config`], with `key_line` (`key_file: …` or `key_env: …`).
    fn config_with_key(&self, enabled: bool, contract: &str, key_line: &str) -> String {
        let path = self.dir.path().join("node.yaml");
        std::fs::write(
            &path,
            format!(
                "database:\n  url: \"{}\"\nbtp_nips:\n  peer_connections:\n    channel_poll_interval_seconds: 1\n    channel_opening_timeout_seconds: 60\nchain:\n  enabled: {enabled}\n  rpc_url: \"{}\"\n  chain_id: {CHAIN_ID}\n  contract_address: \"{contract}\"\n  confirmations: 3\n  {key_line}\n  min_balance_wei: \"1000\"\n",
                Self::db_url(&self.dir),
                self.anvil.url,
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    /// Runs the binary, mining a block every 100 ms until it exits (at most 60 s).
    async fn run_mining(&self, args: &[&str]) -> Output {
        self.run_mining_env(args, &[]).await
    }

    async fn run_mining_env(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(60), "command hangs");
            self.anvil.mine(1).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.wait_with_output().unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn the_operator_deploys_the_contract_then_opens_a_channel_once() {
    let f = Fixture::new().await;
    // Before there is a contract, the chain section cannot be enabled yet.
    let config = f.config(false, "");
    let out = f
        .run_mining(&["deploy-contract", "--config", &config])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let address: Address = stdout
        .split_whitespace()
        .skip_while(|w| *w != "at")
        .nth(1)
        .expect("the address is printed")
        .parse()
        .expect("an address");
    let config = f.config(true, &address.to_string());

    let peer = support::node::pubkey(1);
    let out = f
        .run_mining(&[
            "open-channel",
            &peer,
            "--deposit",
            "123456",
            "--config",
            &config,
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("confirmed (3 confirmations)"),
        "{}",
        text(&out)
    );
    // Not a terminal: the confirmations as plain lines, no spinner redrawing one line.
    assert!(!text(&out).contains('\r'), "{}", text(&out));
    assert!(
        text(&out)
            .lines()
            .filter(|l| l.ends_with("/3 confirmations"))
            .all(|l| l.split('/').next().unwrap().parse::<u64>().is_ok()),
        "{}",
        text(&out)
    );
    let ids = f
        .anvil
        .view(
            address,
            PC::channelsBetweenCall {
                payer: f.key.address(),
                payee: f.payee,
            },
        )
        .await;
    assert_eq!(ids.len(), 1);
    let channel = f
        .anvil
        .view(address, PC::channelsCall { channelId: ids[0] })
        .await;
    assert_eq!(channel.deposit, U256::from(123456));
    assert!(text(&out).contains(&format!("{:#x}", ids[0])));

    // Again: the usable channel is reported, nothing is sent.
    let out = f
        .run_mining(&["open-channel", &peer, "--config", &config])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exists already"), "{}", text(&out));
    let count = f
        .anvil
        .view(
            address,
            PC::openCountCall {
                payer: f.key.address(),
            },
        )
        .await;
    assert_eq!(count, U256::from(1));

    // An unknown peer is named.
    let stranger = support::node::pubkey(99);
    let out = f
        .run_mining(&["open-channel", &stranger, "--config", &config])
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("no peer with pubkey {stranger}")),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn open_channel_refuses_a_disabled_chain_and_a_zero_deposit_naming_why() {
    let f = Fixture::new().await;
    let config = f.config(false, "");
    let peer = support::node::pubkey(1);
    let out = f
        .run_mining(&["open-channel", &peer, "--config", &config])
        .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("chain.enabled"), "{}", text(&out));
    let out = f
        .run_mining(&["open-channel", &peer, "--deposit", "0", "--config", &config])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("more than 0 wei"), "{}", text(&out));
}

#[tokio::test]
async fn the_key_may_come_from_an_environment_variable_and_its_absence_is_named() {
    let f = Fixture::new().await;
    let config = f.config_with_key(false, "", "key_env: \"BTP_TEST_NODE_EVM_KEY\"");
    let out = f
        .run_mining(&["deploy-contract", "--config", &config])
        .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("chain.key_env"), "{}", text(&out));
    assert!(
        text(&out).contains("BTP_TEST_NODE_EVM_KEY"),
        "{}",
        text(&out)
    );
    let key = format!("0x{}", alloy::hex::encode(f.key.to_bytes()));
    let out = f
        .run_mining_env(
            &["deploy-contract", "--config", &config],
            &[("BTP_TEST_NODE_EVM_KEY", key)],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("PaymentChannels deployed at"),
        "{}",
        text(&out)
    );
}
