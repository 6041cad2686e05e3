//! Real Nostr relays on 127.0.0.1 for the discovery tests, of two independent
//! implementations: the in-process relay of `nostr-relay-builder` (Rust, this process) and
//! the PyPI `nostr-relay` server (Python, a child process that `.ci/run` installs in a
//! venv). Each can be stopped and started again on the same port with the same storage;
//! [`on_both_relays!`] runs a suite on both.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use btp_nips_node::discovery::relays::RelayTuning;
use nostr_relay_builder::prelude::{
    LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase, RateLimit, RelayBuilder,
};

/// Makes each `async fn name(kind: Impl)` listed a pair of tests, `name::relay_builder` and
/// `name::python_nostr_relay`, under the test attribute given first (`#[tokio::test]`,
/// `#[actix_rt::test]`).
macro_rules! on_both_relays {
    (#[$test:meta] $($name:ident),* $(,)?) => {$(
        mod $name {
            #[$test]
            async fn relay_builder() {
                super::$name($crate::support::relays::Impl::Builder).await
            }
            #[$test]
            async fn python_nostr_relay() {
                super::$name($crate::support::relays::Impl::Python).await
            }
        }
    )*};
}
pub(crate) use on_both_relays;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// nostr-relay-builder's in-process relay.
    Builder,
    /// The Python `nostr-relay` server.
    Python,
}

enum Running {
    Builder(Box<LocalRelay>, Proxy),
    Python(Child),
    Stopped,
}

pub struct TestRelay {
    pub kind: Impl,
    pub port: u16,
    running: Running,
    /// The builder relay's storage, kept across restarts.
    db: std::sync::Arc<dyn NostrDatabase>,
    /// The Python relay's directory (config, SQLite file, log).
    dir: tempfile::TempDir,
}

/// Relay-client timings for tests on loopback: short timeouts and retries.
pub fn tuning() -> RelayTuning {
    RelayTuning {
        query_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
        retry_interval: Duration::from_millis(300),
        notification_capacity: RelayTuning::capacity_for(4, 200),
    }
}

/// The Python relay's executable: `BTP_NIPS_NOSTR_RELAY`, or the venv `.ci/run` makes.
pub fn python_relay_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BTP_NIPS_NOSTR_RELAY") {
        return PathBuf::from(p);
    }
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nostr-relay-venv/bin/nostr-relay");
    assert!(
        p.exists(),
        "the Python nostr-relay is not installed at {}: run `.ci/nostr-relay-venv` (which .ci/run does) \
         or set BTP_NIPS_NOSTR_RELAY",
        p.display()
    );
    p
}

impl TestRelay {
    pub async fn start(kind: Impl) -> TestRelay {
        let mut relay = TestRelay {
            kind,
            port: super::free_port(),
            running: Running::Stopped,
            db: std::sync::Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
                events: true,
                max_events: None,
            })),
            dir: tempfile::tempdir().unwrap(),
        };
        relay.run().await;
        relay
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        match self.kind {
            Impl::Builder => {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let builder = RelayBuilder::default()
                        .addr("127.0.0.1".parse().unwrap())
                        .database(self.db.clone())
                        .default_filter_limit(10_000)
                        .rate_limit(RateLimit {
                            max_reqs: 10_000,
                            notes_per_minute: 1_000_000,
                        });
                    let relay = LocalRelay::new(builder);
                    let started = relay.run().await;
                    let proxied = match &started {
                        Ok(()) => {
                            let port = relay
                                .url()
                                .await
                                .as_str()
                                .rsplit(':')
                                .next()
                                .unwrap()
                                .trim_end_matches('/')
                                .parse()
                                .unwrap();
                            Proxy::listen(self.port, port)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    match proxied {
                        Ok(proxy) => {
                            self.running = Running::Builder(Box::new(relay), proxy);
                            break;
                        }
                        // The previous instance may not have released the port yet.
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            let _ = e;
                            relay.shutdown();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("relay-builder relay on port {}: {e}", self.port),
                    }
                }
            }
            Impl::Python => {
                let dir = self.dir.path();
                let config = dir.join("relay.yaml");
                std::fs::write(
                    &config,
                    format!(
                        "DEBUG: false\nrelay_name: test relay\nstorage:\n  sqlalchemy.url: sqlite+aiosqlite:///{db}\n  \
                         num_concurrent_reqs: 10\n  num_concurrent_adds: 2\n  validators:\n    \
                         - nostr_relay.validators.is_not_too_large\n    - nostr_relay.validators.is_signed\n\
                         gunicorn:\n  bind: 127.0.0.1:{port}\n  workers: 1\n  loglevel: warning\n  reload: false\n\
                         authentication:\n  enabled: false\nmessage_timeout: 1800\nsubscription_limit: 64\n\
                         max_limit: 20000\nhellthread_limit: 100000\n",
                        db = dir.join("events.sqlite3").display(),
                        port = self.port
                    ),
                )
                .unwrap();
                let log = std::fs::File::create(dir.join("relay.log")).unwrap();
                let mut cmd = Command::new(python_relay_bin());
                cmd.args(["-c", config.to_str().unwrap(), "serve"])
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log);
                // Never outlive the test: killed if the test thread goes away.
                unsafe {
                    use std::os::unix::process::CommandExt;
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        // Its own process group: stopping it stops its workers too.
                        libc::setpgid(0, 0);
                        Ok(())
                    });
                }
                let mut child = cmd.spawn().expect("start the Python nostr-relay");
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    if let Some(status) = child.try_wait().unwrap() {
                        let log =
                            std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
                        panic!("the Python nostr-relay exited ({status}): {log}");
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the Python nostr-relay did not listen on {} within 60 s",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                self.running = Running::Python(child);
            }
        }
    }

    /// Stops the relay (connections drop); its storage is kept.
    pub async fn stop(&mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Builder(relay, proxy) => {
                proxy.close();
                relay.shutdown();
            }
            Running::Python(mut child) => {
                // The relay goes down hard, workers and all, as a crashed server would.
                kill_group(&child);
                let _ = child.wait();
            }
            Running::Stopped => {}
        }
    }

    /// Starts it again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The builder relay is reached through this TCP proxy on the test's port: its own
/// `shutdown` only ends the sessions that are idle at that moment, so "the relay goes down"
/// is done here, by closing every proxied connection and the listener at once.
struct Proxy {
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn listen(port: u16, target: u16) -> std::io::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Ok(Proxy { tasks })
    }

    fn close(self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// SIGKILL to the relay's process group (the gunicorn master and its workers).
fn kill_group(child: &Child) {
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
}
