//! Interoperability with an independent implementation: the npm `ilp-plugin-btp` (with
//! `ilp-packet` and `ilp-protocol-ildcp`), run by Node.js from `interop/` (installed by
//! `.ci/run`). Shared-secret mode, both directions: our client against its server, its
//! client against our server, exchanging ILP Prepare/Fulfill/Reject, ILDCP both ways, and
//! our PING/PONG answered to a PING it builds by hand.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use btp_nips_node::session::client::{BtpSession, ClientAuth};
use btp_nips_node::session::{SessionContext, SessionServer};
use btp_nips_node::wire::ilp::{self, Address, Prepare, Timestamp};
use nostr::Keys;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::sessions::*;

const SECRET: &str = "interop-shared-secret-0123456789";

fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        dir.join("node_modules/ilp-plugin-btp").exists(),
        "the npm interop packages are not installed: run `npm ci --prefix interop` (.ci/run does)"
    );
    dir
}

/// The JS peer, killed when dropped; its JSON lines arrive on a channel.
struct JsPeer {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl JsPeer {
    fn spawn(args: &[&str]) -> JsPeer {
        let dir = interop_dir();
        let mut child = Command::new("node")
            .arg(dir.join("btp-peer.js"))
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => eprintln!("js: {line}"),
                }
            }
        });
        JsPeer { child, lines }
    }

    /// The next line whose `event` is `name` (others are skipped), within 15 s.
    async fn event(&mut self, name: &str) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(15), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{name}` from the JS peer within 15 s"))
                .unwrap_or_else(|| panic!("the JS peer exited before `{name}`"));
            if line["event"] == "error" {
                panic!("the JS peer failed: {line}");
            }
            if line["event"] == name {
                return line;
            }
        }
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn expiry() -> Timestamp {
    Timestamp::now().checked_add_millis(30_000).unwrap()
}

/// The PING checks the JS peer reports: a PONG (type 9) echoing its nonce, fulfilled with
/// the zero preimage, sent by our address.
fn check_pong(pong: &Value, our_address: &str) {
    assert_eq!(pong["type"], 9, "{pong}");
    assert_eq!(pong["nonce"], "00000000cafebabe", "{pong}");
    assert_eq!(pong["sender"], our_address, "{pong}");
    assert_eq!(pong["fulfillment"], "00".repeat(32), "{pong}");
}

#[actix_rt::test]
async fn our_client_with_the_ilp_plugin_btp_server() {
    let port = support::free_port();
    let mut js = JsPeer::spawn(&["server", &port.to_string(), SECRET]);
    js.event("ready").await;
    let ctx = SessionContext::new(Keys::generate(), "rust", session_settings(""));
    let endpoint = format!("ws://127.0.0.1:{port}");
    let session = BtpSession::connect(
        ctx.clone(),
        &endpoint,
        ClientAuth::SharedSecret {
            username: "rustnode".into(),
            secret: SECRET.into(),
        },
    )
    .await
    .expect("authenticated with the shared secret");
    js.event("connected").await;

    // Prepare → Fulfill: the JS side checks our condition and returns the preimage.
    let preimage = [7u8; 32];
    let condition: [u8; 32] = Sha256::digest(preimage).into();
    let prepare = Prepare {
        amount: 5,
        expires_at: expiry(),
        execution_condition: condition,
        destination: Address::new("test.js-node.somebody").unwrap(),
        data: preimage.to_vec(),
    };
    match session.send_prepare(&prepare).await.unwrap() {
        ilp::Packet::Fulfill(f) => {
            assert_eq!(f.fulfillment, preimage);
            assert_eq!(f.data, b"fulfilled:5");
        }
        other => panic!("expected a Fulfill, got {other:?}"),
    }
    // Prepare → Reject.
    let reject = Prepare {
        destination: Address::new("test.js-node.reject").unwrap(),
        ..prepare.clone()
    };
    match session.send_prepare(&reject).await.unwrap() {
        ilp::Packet::Reject(r) => {
            assert_eq!(r.code_str(), "F99");
            assert_eq!(r.message, b"rejected as asked");
            assert_eq!(r.data, b"reject-data");
            assert_eq!(r.triggered_by.unwrap().as_str(), "test.js-node");
        }
        other => panic!("expected a Reject, got {other:?}"),
    }
    // ILDCP from the JS server.
    let info = session.fetch_ildcp().await.unwrap();
    assert_eq!(info.client_address.as_str(), "test.js-node.child");
    assert_eq!((info.asset_scale, info.asset_code.as_str()), (6, "JSC"));

    // The JS server asks us over the same connection: ILDCP, a PING, an unroutable Prepare.
    let ildcp = js.event("ildcp").await;
    let ours = ctx.own_address.as_str();
    assert_eq!(
        ildcp["clientAddress"],
        format!("{ours}.rustnode"),
        "{ildcp}"
    );
    assert_eq!(ildcp["assetCode"], "msat");
    check_pong(&js.event("pong").await, ours);
    let unroutable = js.event("unroutable").await;
    assert_eq!(unroutable["type"], "ilp_reject", "{unroutable}");
    assert_eq!(unroutable["code"], "F02", "{unroutable}");
    js.event("done").await;
}

#[actix_rt::test]
async fn the_ilp_plugin_btp_client_with_our_server() {
    let settings = session_settings(&format!(
        "  shared_secret_peers:\n    - {{ username: \"jsclient\", secret: \"{SECRET}\" }}\n"
    ));
    let ctx = SessionContext::new(Keys::generate(), "rust", settings);
    let server = SessionServer::start(ctx.clone(), "127.0.0.1:0", None).unwrap();
    let port = server.local_addr.port();

    // The wrong secret: refused, and the plugin never reports a connection.
    let mut wrong = JsPeer::spawn(&[
        "client",
        &format!("btp+ws://jsclient:wrong-secret@127.0.0.1:{port}/"),
    ]);
    let first = tokio::time::timeout(Duration::from_secs(15), wrong.lines.recv())
        .await
        .expect("the plugin reacts to the refusal")
        .expect("a line");
    assert_eq!(
        first["event"], "error",
        "a wrong secret was accepted: {first}"
    );
    drop(wrong);

    let mut js = JsPeer::spawn(&[
        "client",
        &format!("btp+ws://jsclient:{SECRET}@127.0.0.1:{port}/"),
    ]);
    js.event("connected").await;
    let ildcp = js.event("ildcp").await;
    let ours = ctx.own_address.as_str();
    assert_eq!(
        ildcp["clientAddress"],
        format!("{ours}.jsclient"),
        "{ildcp}"
    );
    assert_eq!(ildcp["assetScale"], 0);
    assert_eq!(ildcp["assetCode"], "msat");
    check_pong(&js.event("pong").await, ours);
    let unroutable = js.event("unroutable").await;
    assert_eq!(unroutable["type"], "ilp_reject", "{unroutable}");
    assert_eq!(unroutable["code"], "F02", "{unroutable}");
    js.event("done").await;
    server.stop().await;
}
