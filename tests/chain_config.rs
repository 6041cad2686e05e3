//! The `chain` configuration section: every broken rule is refused with the key it broke.

use btp_nips_node::config::Settings;

const GOOD: &str = "chain:\n  enabled: true\n  rpc_url: \"http://127.0.0.1:8545\"\n  chain_id: 31337\n  contract_address: \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n  key_env: \"NODE_EVM_KEY\"\n";

fn refused_key(yaml: &str) -> &'static str {
    match Settings::from_yaml_overrides(yaml) {
        Ok(_) => panic!("accepted: {yaml}"),
        Err(e) => e.key().unwrap_or_else(|| panic!("no key named: {e}")),
    }
}

/// GOOD with the top-level `chain` keys of `extra` replaced (or added).
fn with(extra: &str) -> String {
    let overridden: Vec<&str> = extra
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split(':').next())
        .collect();
    let kept: String = GOOD
        .lines()
        .filter(|l| !overridden.iter().any(|k| l.split(':').next() == Some(*k)))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{kept}{extra}")
}

#[test]
fn the_defaults_keep_the_chain_off_with_safe_values() {
    let s = Settings::defaults().unwrap();
    assert!(!s.chain.enabled);
    assert!(!s.chain.auto_open.enabled, "auto-open is off by default");
    assert_eq!(s.chain.confirmations, 5);
    assert!(s.chain.deposit() <= s.chain.per_channel_cap());
    Settings::from_yaml_overrides(GOOD).expect("a complete chain section is valid");
}

#[test]
fn each_broken_chain_rule_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("  rpc_url: \"ws://x\"\n", "chain.rpc_url"),
        ("  chain_id: 0\n", "chain.chain_id"),
        ("  contract_address: \"0x1234\"\n", "chain.contract_address"),
        ("  contract_address: \"\"\n", "chain.contract_address"),
        ("  confirmations: 0\n", "chain.confirmations"),
        ("  rpc_timeout_seconds: 0\n", "chain.rpc_timeout_seconds"),
        ("  key_env: \"\"\n", "chain.key_file"),
        ("  key_file: \"/etc/key\"\n", "chain.key_file"),
        ("  deposit_wei: \"ten\"\n", "chain.deposit_wei"),
        ("  deposit_wei: \"0\"\n", "chain.deposit_wei"),
        ("  min_balance_wei: \"-1\"\n", "chain.min_balance_wei"),
        (
            "  min_balance_wei: \"20000000000000000\"\n",
            "chain.min_balance_wei",
        ),
        (
            "  channel_duration_seconds: 3600\n  min_time_left_seconds: 3600\n",
            "chain.channel_duration_seconds",
        ),
        (
            "  auto_open:\n    per_channel_cap_wei: \"2\"\n    total_cap_wei: \"1\"\n",
            "chain.auto_open.per_channel_cap_wei",
        ),
        (
            "  auto_open:\n    enabled: true\n    per_channel_cap_wei: \"1\"\n",
            "chain.deposit_wei",
        ),
        (
            "  auto_open:\n    total_cap_wei: \"x\"\n",
            "chain.auto_open.total_cap_wei",
        ),
    ];
    for (extra, key) in cases {
        assert_eq!(refused_key(&with(extra)), *key, "for {extra}");
    }
    assert_eq!(
        refused_key("btp_nips:\n  peer_connections:\n    channel_recheck_seconds: 0\n"),
        "btp_nips.peer_connections.channel_recheck_seconds"
    );
}

#[test]
fn a_disabled_chain_still_checks_its_amounts_but_not_its_endpoint() {
    Settings::from_yaml_overrides("chain:\n  enabled: false\n  contract_address: \"\"\n")
        .expect("an unconfigured, disabled chain is fine");
    assert_eq!(
        refused_key("chain:\n  enabled: false\n  deposit_wei: \"1.5\"\n"),
        "chain.deposit_wei"
    );
}
