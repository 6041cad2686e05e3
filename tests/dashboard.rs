//! The dashboard in a real browser (headless Chromium over the DevTools protocol) against a
//! running node: the page asks for a token once, lists the peers grouped by state, keeps
//! its buttons disabled for the read-only token, and with the admin token a Retry click on
//! a failed peer brings it back, as both the page and the API show. A screenshot is saved
//! as `target/dashboard.png`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use btp_nips_node::lifecycle::PeerState;
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::ports::ChannelPolicyStatus;
use serde_json::Value;
use support::admin::admin_node;
use support::browser::Browser;
use support::node::{pubkey, stored};
use support::wait::eventually;

/// The page loads, renders, reacts to a click: seconds, generous for a loaded machine.
const SOON: Duration = Duration::from_secs(30);

/// Where the screenshot goes: the target directory.
fn artifact(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join(name)
}

/// Waits until `expression` evaluates to `true` in the page (one that throws, as while the
/// page is still loading, is not true yet).
async fn until(browser: &mut Browser, what: &str, expression: &str) {
    let limit = tokio::time::Instant::now() + SOON;
    let guarded = format!(
        "(() => {{ try {{ return ({expression}) === true; }} catch (_) {{ return false; }} }})()"
    );
    loop {
        if browser.eval(&guarded).await == Value::Bool(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < limit,
            "the page never showed {what} (`{expression}`); the page says: {}",
            browser.eval("document.body.innerText").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row(pubkey: &str) -> String {
    format!("document.querySelector('tr.peer[data-peer=\"{pubkey}\"]')")
}

#[actix_rt::test]
async fn the_dashboard_lists_the_peers_and_retries_a_failed_one_with_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let world = MemoryWorld::new();
    for i in 1..=3 {
        world.add_ready_peer(&pubkey(i));
    }
    // A fourth peer has no channel and auto-open does not cover it: it waits in the inbox.
    world.announce(&pubkey(4), MemoryWorld::announcement_for(&pubkey(4)));
    world.set_channel_policy(Some(ChannelPolicyStatus {
        deposit_wei: 5_000_000_000_000_000,
        auto_open: true,
        per_channel_cap_wei: Some(5_000_000_000_000_000),
        total_cap_wei: Some(20_000_000_000_000_000),
        total_cap_used_wei: Some(15_000_000_000_000_000),
        total_cap_left_wei: Some(5_000_000_000_000_000),
        unknown_reason: None,
    }));
    let stored_peers = [
        stored(1, PeerState::Failed, true, None),
        stored(2, PeerState::Disconnected, true, Some(10)),
        stored(3, PeerState::Disconnected, true, Some(20)),
        stored(4, PeerState::Disconnected, true, None),
    ];
    let (node, api) = admin_node(&world, &dir, "{}", "", &stored_peers).await;
    let failed = pubkey(1);

    let mut browser = Browser::open(&format!("{}/", api.base)).await;
    // Asked for a token: the read-only one first.
    until(
        &mut browser,
        "the token form",
        "!document.getElementById('login').hidden",
    )
    .await;
    browser
        .eval(&format!(
            "document.getElementById('token-input').value = '{}'; \
             document.getElementById('token-submit').click(); true",
            api.read_token
        ))
        .await;
    until(
        &mut browser,
        "four peers",
        "document.querySelectorAll('tr.peer').length === 4",
    )
    .await;
    // The inbox: the waiting peer with the deposit an approval proposes, and what the
    // auto-open caps have left (from /v1/info).
    let waiting = format!("document.querySelector('tr[data-inbox=\"{}\"]')", pubkey(4));
    until(
        &mut browser,
        "the waiting peer's proposed deposit",
        &format!(
            "{waiting}?.querySelector('td.proposed').textContent === \
             '5000000000000000 wei (0.005 ETH)'"
        ),
    )
    .await;
    until(
        &mut browser,
        "the caps and what is left of them",
        "document.getElementById('inbox-policy').textContent.includes(\
         '5000000000000000 wei (0.005 ETH) per channel, 20000000000000000 wei (0.02 ETH) in all') \
         && document.getElementById('inbox-policy').textContent.includes(\
         '5000000000000000 wei (0.005 ETH) left of the total cap')",
    )
    .await;
    until(
        &mut browser,
        "the failed peer in the failed group",
        &format!(
            "{r}?.dataset.state === 'failed' && {r}.closest('table').dataset.group === 'failed'",
            r = row(&failed)
        ),
    )
    .await;
    until(
        &mut browser,
        "the two others connected",
        "document.querySelectorAll('table[data-group=\"connected\"] tr.peer').length === 2",
    )
    .await;
    // Read-only: every button disabled.
    until(
        &mut browser,
        "the read-only token's disabled buttons",
        "document.getElementById('access').textContent.includes('read-only') && \
         [...document.querySelectorAll('tr.peer button')].every(b => b.disabled)",
    )
    .await;
    let (_, peer) = api.get(&format!("/v1/peers/{failed}")).await;
    assert_eq!(peer["state"], "failed");

    // The admin token (kept in the tab's session storage, as the form keeps it).
    browser
        .eval(&format!(
            "sessionStorage.setItem('btp-nips-node-token', '{}'); location.reload(); true",
            api.admin_token
        ))
        .await;
    until(
        &mut browser,
        "an enabled Retry on the failed peer",
        &format!(
            "document.getElementById('access').textContent === 'admin token' && \
             {}?.querySelector('button.retry')?.disabled === false",
            row(&failed)
        ),
    )
    .await;
    browser
        .eval(&format!(
            "{}.querySelector('button.retry').click(); true",
            row(&failed)
        ))
        .await;
    until(
        &mut browser,
        "the retried peer connected",
        &format!("{}?.dataset.state === 'connected'", row(&failed)),
    )
    .await;
    eventually(
        SOON,
        "the API reports the retried peer connected",
        || async {
            let (_, peer) = api.get(&format!("/v1/peers/{failed}")).await;
            (peer["state"] == "connected").then_some(())
        },
    )
    .await;
    until(
        &mut browser,
        "the retry in the status line",
        "document.getElementById('status').textContent.includes('retry')",
    )
    .await;

    // The peer's detail: its history, newest first, shows the way back.
    browser
        .eval(&format!("{}.click(); true", row(&failed)))
        .await;
    until(
        &mut browser,
        "the peer's history with the retry",
        "!!document.querySelector('#history tbody tr') && \
         document.getElementById('history').innerText.includes('discovering')",
    )
    .await;

    let shot = artifact("dashboard.png");
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    drop(browser);
    node.shutdown().await.unwrap();
}
