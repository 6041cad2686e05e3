//! A headless Chromium driven over the DevTools protocol (CDP over its WebSocket): open a
//! page, evaluate script in it, take a screenshot. The browser is Debian's `chromium`
//! (`scripts/test` installs it), or the one `CHROMIUM_BIN` names.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the browser may take to start, and to answer one command.
const START: Duration = Duration::from_secs(30);
const ANSWER: Duration = Duration::from_secs(30);

/// The browser: `CHROMIUM_BIN`, else `chromium` (or `chromium-browser`, `google-chrome`)
/// on PATH.
pub fn chromium_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(found) = std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return found;
        }
    }
    panic!("no Chromium: install Debian's `chromium` (scripts/test does) or set CHROMIUM_BIN");
}

/// One headless browser with one page attached.
pub struct Browser {
    child: Child,
    socket: Socket,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser and opens `url` in a new page.
    pub async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium_bin())
            .args([
                "--headless=new",
                // Tests run as root in containers, where the sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1280,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads where the DevTools endpoint is, then keeps draining the browser's chatter.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(START)
            .expect("chromium names its DevTools endpoint");
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("the DevTools endpoint accepts");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// Sends one command (to the page when `session` is given) and returns its result.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("the browser takes the command");
        let answer = tokio::time::timeout(ANSWER, async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("the browser's socket stays open")
                    .expect("a DevTools message");
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the browser did not answer {method}"));
        assert!(answer["error"].is_null(), "{method}: {}", answer["error"]);
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let result = self
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "`{expression}` threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Saves a PNG of the page as it is now.
    pub async fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let session = self.session.clone();
        let shot = self
            .call(
                Some(&session),
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG image");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
