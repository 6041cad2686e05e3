//! A node with its admin API on a free loopback port, and a small HTTP client of it.

use std::time::Duration;

use btp_nips_node::actors::clock::NodeClock;
use btp_nips_node::lifecycle::{PeerRecord, Timestamp};
use btp_nips_node::node::Node;
use btp_nips_node::ports::memory::MemoryWorld;
use serde_json::Value;

use super::node::{memory_node, settings};

/// The admin part of a node's YAML: token files in `dir`, and `extra` keys of the section.
pub fn admin_yaml(dir: &tempfile::TempDir, extra: &str) -> String {
    format!(
        "admin:\n  token_file: \"{}\"\n  read_token_file: \"{}\"\n{extra}",
        dir.path().join("admin-token").display(),
        dir.path().join("read-token").display()
    )
}

/// A node on the in-memory world with `stored` in a fresh SQLite file in `dir`, its admin
/// API on a free port; `yaml` may not hold an `admin` section (give its keys as
/// `admin_extra`, two-space indented).
pub async fn admin_node(
    world: &MemoryWorld,
    dir: &tempfile::TempDir,
    yaml: &str,
    admin_extra: &str,
    stored: &[PeerRecord],
) -> (Node, Api) {
    let path = dir.path().join("node.db");
    let db = btp_nips_node::storage::Database::open(path.to_str().unwrap(), 2).unwrap();
    db.upsert_batch(stored).unwrap();
    let yaml = match yaml.trim() {
        "{}" | "" => admin_yaml(dir, admin_extra),
        yaml => format!("{yaml}\n{}", admin_yaml(dir, admin_extra)),
    };
    let node = memory_node(settings(&yaml), world)
        .database(db)
        .clock(NodeClock::anchored_at(Timestamp::now_system()))
        .admin_listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let api = Api::of(&node, dir);
    (node, api)
}

/// The admin API of one node, with both its tokens.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub admin_token: String,
    pub read_token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn of(node: &Node, dir: &tempfile::TempDir) -> Api {
        let read = |name: &str| {
            std::fs::read_to_string(dir.path().join(name))
                .unwrap()
                .trim()
                .to_string()
        };
        Api {
            base: format!("http://{}", node.admin_addr().expect("admin API on")),
            admin_token: read("admin-token"),
            read_token: read("read-token"),
            http: reqwest::Client::new(),
        }
    }

    /// The admin API at `base` (`http://IP:PORT`) with the token files in `dir` named
    /// `admin-token` and `read-token` (a node in another process).
    pub fn at(base: &str, dir: &std::path::Path) -> Api {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
                .trim()
                .to_string()
        };
        Api {
            base: base.to_string(),
            admin_token: read("admin-token"),
            read_token: read("read-token"),
            http: reqwest::Client::new(),
        }
    }

    /// `method path` with `token` (None: no Authorization header) and `body`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let token = self.read_token.clone();
        self.call("GET", path, Some(&token), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let token = self.admin_token.clone();
        self.call("POST", path, Some(&token), Some(body)).await
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.read_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }
}

/// One sample of the Prometheus text format: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text format (comments and `# EOF` skipped); panics on a malformed line, so
/// a test using it also proves the text is well formed.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = body
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label: {line}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label: {line}"));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name: {line}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}
