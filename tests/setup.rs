//! Setting a node up as an operator would: `init`, then `config check` against a real relay
//! and a real chain (anvil); the one identity every part uses, with or without relays; the
//! one public endpoint, announced and bound into the tokens the node accepts.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use btp_nips_node::config::Settings;
use btp_nips_node::discovery::announcement::announcement_kind;
use btp_nips_node::discovery::identity;
use btp_nips_node::discovery::relays::RelaySet;
use btp_nips_node::node::{Node, NodeBuilder};
use btp_nips_node::session::client::ClientAuth;
use btp_nips_node::session::{BtpSession, SessionContext};
use nostr_relay_builder::prelude::{Filter, Keys};
use support::chain::{Anvil, CHAIN_ID};
use support::relays::{Impl, TestRelay};
use support::sessions::session_settings;

const BIN: &str = env!("CARGO_BIN_EXE_btp-nips-node");

/// Runs the binary off the test's thread (an in-process relay runs on it).
async fn run_bin(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .envs(env)
            .env_remove("BTP_NIPS_NODE_NSEC")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Replaces `key: <anything>` on the line holding `key:` (as an operator edits the file).
fn set(config: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut found = false;
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if !found && trimmed.starts_with(&format!("{key}:")) {
                found = true;
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}{key}: {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(found, "{key} is in the file init wrote:\n{text}");
    std::fs::write(config, edited.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn init_writes_a_key_and_a_config_that_passes_config_check_against_a_relay_and_anvil() {
    let relay = TestRelay::start(Impl::Builder).await;
    let anvil = Anvil::start();
    let deployer = anvil.funded_key(10).await;
    let contract = anvil.deploy(&deployer).await;
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node");

    let out = run_bin(
        vec![
            "init".into(),
            "--dir".into(),
            node_dir.display().to_string(),
            "--network".into(),
            "local".into(),
        ],
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let key_file = node_dir.join("btp-nips-node.nsec");
    let config = node_dir.join("btp-nips-node.yaml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let keys = identity::load_file(&key_file).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&keys.public_key().to_hex()), "{stdout}");
    let config_arg = config.display().to_string();
    for next in [
        format!("btp-nips-node config check --config {config_arg}"),
        format!("btp-nips-node run --config {config_arg}"),
    ] {
        assert!(stdout.contains(&next), "{stdout}");
    }
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("chain_id: 31337"), "{written}");
    assert!(written.lines().count() < 60, "init's file stays short");

    // As written it loads; the operator's decisions come next.
    let settings = Settings::load(Some(&config)).unwrap();
    assert_eq!(settings.node.key_file, key_file.display().to_string());

    // Never overwrites: the key and the file are as they were.
    let again = run_bin(
        vec![
            "init".into(),
            "--dir".into(),
            node_dir.display().to_string(),
        ],
        vec![],
    )
    .await;
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    assert_eq!(
        identity::load_file(&key_file).unwrap().public_key(),
        keys.public_key()
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // The operator fills in relays, the operator relay and the chain.
    let evm_key = node_dir.join("evm.key");
    std::fs::write(&evm_key, alloy::hex::encode(deployer.to_bytes())).unwrap();
    std::fs::set_permissions(&evm_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    set(&config, "relays", &format!("[\"{}\"]", relay.url()));
    set(&config, "operator_relay", &format!("\"{}\"", relay.url()));
    set(&config, "enabled", "true");
    set(&config, "rpc_url", &format!("\"{}\"", anvil.url));
    set(&config, "contract_address", &format!("\"{contract}\""));
    // The first key_file is the node's; the chain's is the second.
    let text_now = std::fs::read_to_string(&config).unwrap();
    let chain_at = text_now.find("\nchain:").unwrap();
    let (head, tail) = text_now.split_at(chain_at);
    let tail = tail.replacen(
        "key_file: \"\"",
        &format!("key_file: \"{}\"", evm_key.display()),
        1,
    );
    std::fs::write(&config, format!("{head}{tail}")).unwrap();

    let out = run_bin(
        vec![
            "config".into(),
            "check".into(),
            "--config".into(),
            config_arg.clone(),
        ],
        vec![],
    )
    .await;
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("configuration OK"), "{report}");
    assert!(report.contains(&keys.public_key().to_hex()), "{report}");
    assert!(
        report.contains(&format!("nostr.relays: {} answers", relay.url())),
        "{report}"
    );
    assert!(
        report.contains(&format!("events.operator_relay: {} answers", relay.url())),
        "{report}"
    );
    assert!(report.contains(&format!("chain {CHAIN_ID}")), "{report}");
    // Each value with its source; the node's secret key is never printed.
    assert!(
        report.contains("chain.chain_id = 31337  (file)"),
        "{report}"
    );
    assert!(
        report.contains("session.asset_code = msat  (default)"),
        "{report}"
    );
    let secret = std::fs::read_to_string(&key_file).unwrap();
    assert!(!report.contains(secret.trim()), "{report}");
    let out = run_bin(
        vec![
            "config".into(),
            "check".into(),
            "--config".into(),
            config_arg.clone(),
        ],
        vec![("BTP_NIPS_NODE__SESSION__ASSET_CODE".into(), "sat".into())],
    )
    .await;
    assert!(
        text(&out).contains("session.asset_code = sat  (env)"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn config_check_names_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let open_key = dir.path().join("open.nsec");
    std::fs::write(&open_key, Keys::generate().secret_key().to_secret_hex()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (dead_relay, dead_operator_relay, dead_rpc) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        format!(
            "node: {{id: \"9lives\", key_file: \"{}\", public_endpoint: \"https://node.example\"}}\n\
             database: {{pool_size: 0}}\n\
             nostr: {{relays: [\"ws://127.0.0.1:{dead_relay}\"], allow_ws_loopback: true, operator_pubkey: \"npub1nope\"}}\n\
             events: {{operator_relay: \"ws://127.0.0.1:{dead_operator_relay}\"}}\n\
             chain: {{enabled: true, rpc_url: \"http://127.0.0.1:{dead_rpc}\", chain_id: 31337, \
             contract_address: \"0x5FbDB2315678afecb367f032d93F642f64180aa3\", key_env: \"BTP_TEST_NO_SUCH_KEY\"}}\n",
            open_key.display()
        ),
    )
    .unwrap();
    let out = run_bin(
        vec![
            "config".into(),
            "check".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        vec![],
    )
    .await;
    assert!(!out.status.success());
    let report = text(&out);
    for problem in [
        "node.id",
        "database.pool_size",
        "nostr.operator_pubkey",
        "node.public_endpoint",
        "nostr.announce.base_address",
        "readable by others",
        &format!("nostr.relays: ws://127.0.0.1:{dead_relay} does not answer"),
        &format!("events.operator_relay: ws://127.0.0.1:{dead_operator_relay} does not answer"),
        "BTP_TEST_NO_SUCH_KEY",
        &format!("RPC endpoint http://127.0.0.1:{dead_rpc}"),
    ] {
        assert!(report.contains(problem), "{problem}: {report}");
    }
    assert!(report.contains("10 problems"), "{report}");
}

/// A node with the key in `key_file`, its public endpoint, listening on `listen`, with
/// `extra` configuration.
async fn node_with(key_file: &Path, dir: &Path, endpoint: &str, listen: &str, extra: &str) -> Node {
    let yaml = format!(
        "node: {{key_file: \"{}\", public_endpoint: \"{endpoint}\"}}\ndatabase: {{url: \"sqlite://{}\"}}\nsession: {{listen: \"{listen}\"}}\n{extra}",
        key_file.display(),
        dir.join(format!("{}.db", support::free_port())).display()
    );
    let settings = Settings::from_yaml_overrides(&yaml).unwrap();
    NodeBuilder::new(settings).start().await.unwrap()
}

#[actix_rt::test]
async fn the_identity_is_the_same_with_and_without_relays() {
    assert!(
        std::env::var("BTP_NIPS_NODE_NSEC").is_err(),
        "this test reads node.key_file"
    );
    let relay = TestRelay::start(Impl::Builder).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("node.nsec");
    let keys = identity::keygen(&key_file).unwrap();

    let alone = node_with(&key_file, dir.path(), "", "127.0.0.1:0", "").await;
    assert_eq!(alone.public_key(), keys.public_key());
    alone.shutdown().await.unwrap();

    let discovering = node_with(
        &key_file,
        dir.path(),
        "",
        "127.0.0.1:0",
        &format!(
            "nostr: {{relays: [\"{}\"], allow_ws_loopback: true}}\n",
            relay.url()
        ),
    )
    .await;
    assert_eq!(discovering.public_key(), keys.public_key());
    let discovery = discovering.discovery().expect("discovery is on");
    assert_eq!(discovery.keys.public_key(), keys.public_key());
    discovering.shutdown().await.unwrap();

    // Without a key file nothing starts: no silent ephemeral identity.
    let settings = Settings::from_yaml_overrides(&format!(
        "node: {{key_file: \"{}\"}}\nsession: {{listen: \"\"}}\n",
        dir.path().join("missing.nsec").display()
    ))
    .unwrap();
    let err = match NodeBuilder::new(settings.clone()).start().await {
        Ok(_) => panic!("a node started without its key"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("missing.nsec") && err.contains("btp-nips-node init"),
        "{err}"
    );
    let node = NodeBuilder::new(settings)
        .database(
            btp_nips_node::storage::Database::open(
                &format!("sqlite://{}", dir.path().join("eph.db").display()),
                1,
            )
            .unwrap(),
        )
        .ephemeral()
        .start()
        .await
        .unwrap();
    assert_ne!(node.public_key(), keys.public_key());
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn the_announced_endpoint_is_the_one_tokens_are_bound_to() {
    // The two old settings for one endpoint are refused, naming the one that replaced them.
    for old in [
        "session:\n  public_endpoint: \"wss://a.example\"\n",
        "nostr:\n  announce: {endpoint: \"wss://a.example\"}\n",
    ] {
        let err = Settings::from_yaml_overrides(old).unwrap_err();
        assert!(err.to_string().contains("node.public_endpoint"), "{err}");
    }

    let relay = TestRelay::start(Impl::Builder).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("node.nsec");
    let keys = identity::keygen(&key_file).unwrap();
    let port = support::free_port();
    let endpoint = format!("ws://127.0.0.1:{port}/btp");
    let node = node_with(
        &key_file,
        dir.path(),
        &endpoint,
        &format!("127.0.0.1:{port}"),
        &format!(
            "nostr: {{relays: [\"{}\"], allow_ws_loopback: true, announce: {{base_address: \"0x{}\"}}}}\n",
            relay.url(),
            "ab".repeat(20)
        ),
    )
    .await;

    // What the node announced ...
    let client = RelaySet::connect(Keys::generate(), &[relay.url()], support::relays::tuning())
        .await
        .unwrap();
    let filter = Filter::new()
        .kind(announcement_kind())
        .author(keys.public_key());
    let mut announced = None;
    for _ in 0..100 {
        let answers = client.query(filter.clone()).await;
        announced = answers
            .iter()
            .flat_map(|a| a.events.iter())
            .flat_map(|e| e.tags.iter())
            .find(|t| t.as_slice()[0] == "ilp-endpoint")
            .map(|t| t.as_slice()[1].clone());
        if announced.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let announced = announced.expect("the node announced itself");
    assert_eq!(announced, endpoint);

    // ... is what a peer binds its token to, and the node accepts it.
    let ctx = SessionContext::new(Keys::generate(), "peer", session_settings(""));
    let session = BtpSession::connect(
        ctx,
        &announced,
        ClientAuth::Nostr {
            server: keys.public_key(),
        },
    )
    .await
    .expect("a token bound to the announced endpoint is accepted");
    drop(session);
    client.shutdown().await;
    node.shutdown().await.unwrap();
}
