//! The node's binary as an operator runs it: a configuration file written into a test's
//! directory ([`NodeConfig`]), the `run` process with its log lines ([`NodeProcess`]), and
//! the CLI commands against it ([`cli`], [`cli_async`] for tests whose relay runs on the
//! test's own thread).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use nostr::Keys;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_btp-nips-node");

/// A node's configuration file: its database in the directory, and only the parts a test
/// turns on (no BTP listener, no admin API, no relays unless asked).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    dir: PathBuf,
    /// Where [`NodeConfig::write`] put the file.
    pub path: PathBuf,
    pub db_url: String,
    /// The BTP listener's port, when asked for ([`NodeConfig::btp_listener`]).
    pub btp_port: Option<u16>,
    /// The admin API's port, when asked for ([`NodeConfig::admin_api`]).
    pub admin_port: Option<u16>,
    nostr: Option<String>,
    /// Whole top-level sections a test adds (`btp_nips: …`, `chain: …`).
    sections: Vec<String>,
}

impl NodeConfig {
    /// `name` is the node id, and names its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            path: dir.join(format!("{name}.yaml")),
            db_url: format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
            btp_port: None,
            admin_port: None,
            nostr: None,
            sections: Vec::new(),
        }
    }

    /// A BTP listener on a free loopback port, announced as the node's public endpoint.
    pub fn btp_listener(mut self) -> Self {
        self.btp_port = Some(super::free_port());
        self
    }

    /// The admin API on a free loopback port, its token files in the directory.
    pub fn admin_api(mut self) -> Self {
        self.admin_port = Some(super::free_port());
        self
    }

    /// Discovery on `relay`, following `operator`'s list, announcing `base_address`.
    pub fn discovery(mut self, relay: &str, operator: &Keys, base_address: &str) -> Self {
        self.nostr = Some(format!(
            "nostr:\n  relays: [\"{relay}\"]\n  allow_ws_loopback: true\n  operator_pubkey: \"{}\"\n  \
             announce: {{base_address: \"{base_address}\"}}\n",
            operator.public_key().to_hex()
        ));
        self
    }

    /// A whole top-level section (`btp_nips:\n  peer_connections: …`), as YAML.
    pub fn section(mut self, yaml: &str) -> Self {
        let mut yaml = yaml.trim_end().to_string();
        yaml.push('\n');
        self.sections.push(yaml);
        self
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join(format!("{}.admin-token", self.name))
    }

    pub fn read_token_file(&self) -> PathBuf {
        self.dir.join(format!("{}.read-token", self.name))
    }

    /// `http://127.0.0.1:PORT` of the admin API.
    pub fn admin_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.admin_port.expect("the admin API is on")
        )
    }

    /// The file's text.
    pub fn yaml(&self) -> String {
        let mut yaml = match self.btp_port {
            Some(port) => format!(
                "node: {{id: \"{}\", public_endpoint: \"ws://127.0.0.1:{port}/btp\"}}\n\
                 session: {{listen: \"127.0.0.1:{port}\"}}\n",
                self.name
            ),
            None => format!(
                "node: {{id: \"{}\"}}\nsession: {{listen: \"\"}}\n",
                self.name
            ),
        };
        yaml.push_str(&format!("database: {{url: \"{}\"}}\n", self.db_url));
        match self.admin_port {
            Some(port) => yaml.push_str(&format!(
                "admin: {{listen: \"127.0.0.1:{port}\", token_file: \"{}\", read_token_file: \"{}\"}}\n",
                self.admin_token_file().display(),
                self.read_token_file().display()
            )),
            None => yaml.push_str("admin: {listen: \"\"}\n"),
        }
        if let Some(nostr) = &self.nostr {
            yaml.push_str(nostr);
        }
        for section in &self.sections {
            yaml.push_str(section);
        }
        yaml
    }

    /// Writes the file; returns the configuration for the process and the CLI.
    pub fn write(self) -> Self {
        std::fs::write(&self.path, self.yaml()).unwrap();
        self
    }

    /// The token the admin API's read-only routes take (the file exists once the node ran).
    pub fn read_token(&self) -> String {
        std::fs::read_to_string(self.read_token_file())
            .unwrap()
            .trim()
            .to_string()
    }
}

/// One `run` process and the lines it logs.
pub struct NodeProcess {
    pub child: Child,
    lines: Receiver<String>,
    pub log: Vec<String>,
}

impl NodeProcess {
    /// `run --config` with `key` as the node's identity (`None`: `--ephemeral`) and
    /// `rust_log` as RUST_LOG (`None`: the node's default filter).
    pub fn start(config: &NodeConfig, key: Option<&Keys>, rust_log: Option<&str>) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config", config.path.to_str().unwrap()])
            .current_dir(&config.dir)
            .stderr(Stdio::piped());
        match key {
            Some(keys) => command.env("BTP_NIPS_NODE_NSEC", keys.secret_key().to_secret_hex()),
            None => command.arg("--ephemeral").env_remove("BTP_NIPS_NODE_NSEC"),
        };
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeProcess {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Takes in what the process logged so far.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
    }

    pub fn has(&self, needle: &str) -> bool {
        self.log.iter().any(|l| l.contains(needle))
    }

    /// SIGTERM, and waits (polling, never blocking a relay on the test's thread) for a
    /// clean exit.
    pub async fn stop(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "the node exited with {exit}");
                return;
            }
            assert!(Instant::now() < deadline, "the node did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped (a `watch`, say).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the CLI with `args` against the node `config` describes.
pub fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .current_dir(config.parent().unwrap())
        .output()
        .unwrap()
}

/// [`cli`] off the test's thread (a relay in the test's runtime keeps serving meanwhile).
pub async fn cli_async(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&config, &args)
    })
    .await
    .unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit status, stdout and stderr, for an assertion's message.
pub fn both(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `peer <id> --json` every 100 ms until `done` holds; panics with the last answer after
/// `limit`.
pub async fn wait_peer(
    config: &Path,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let out = cli_async(config, &["peer", id, "--json"]).await;
        let peer: Value = if out.status.success() {
            serde_json::from_slice(&out.stdout).unwrap()
        } else {
            Value::String(both(&out))
        };
        if done(&peer) {
            return peer;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {peer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
