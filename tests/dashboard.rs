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
    let stored_peers = [
        stored(1, PeerState::Failed, true, None),
        stored(2, PeerState::Disconnected, true, Some(10)),
        stored(3, PeerState::Disconnected, true, Some(20)),
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
        "three peers",
        "document.querySelectorAll('tr.peer').length === 3",
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
