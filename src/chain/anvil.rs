//! A local anvil chain as a child process: where its binary is, starting it on a loopback
//! port, reading where it listens and its first dev account's key from its banner, and
//! stopping it so it can write its state (`--state`) before it exits.
//!
//! The chain tests and `devnet` both start anvil through [`AnvilChild`]. The child is told to
//! end with the thread that started it (Linux's parent-death signal), so a parent killed
//! without a chance to clean up leaves no anvil running.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `npm ci` in `contracts/` puts the real anvil binary (not its wrapper script).
pub const NPM_ANVIL: &str = "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// Anvil's chain id unless told otherwise.
pub const ANVIL_CHAIN_ID: u64 = 31337;

/// The anvil binary, looked for in order: `ANVIL_BIN`, `anvil` on `PATH`, [`NPM_ANVIL`]
/// under the current directory, then under this source tree (a `cargo run` from anywhere).
/// Each place looked at is named in the error.
pub fn find_anvil() -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    if let Some(path) = std::env::var_os("ANVIL_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        looked.push(format!("ANVIL_BIN={}", path.display()));
    } else {
        looked.push("ANVIL_BIN (not set)".to_string());
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("anvil"))
            .find(|p| p.is_file())
    }) {
        return Ok(path);
    }
    looked.push("anvil on PATH".to_string());
    for base in [
        PathBuf::from("."),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ] {
        let path = base.join(NPM_ANVIL);
        if path.is_file() {
            return Ok(path);
        }
        looked.push(path.display().to_string());
    }
    Err(format!(
        "anvil not found (looked at {}); run `npm ci` in contracts/ or set ANVIL_BIN",
        looked.join(", ")
    ))
}

/// How anvil is to run.
#[derive(Debug, Clone)]
pub struct AnvilOptions {
    /// Loopback port (0: any free one).
    pub port: u16,
    /// `None`: a block only when asked for (`anvil_mine`); `Some(s)`: a block every `s`
    /// seconds.
    pub block_time: Option<u64>,
    /// A state file loaded at start (if it exists) and written at a graceful stop and every
    /// `state_interval` seconds.
    pub state: Option<(PathBuf, u64)>,
    /// Dev accounts to create (the first one's key is read from the banner).
    pub accounts: u32,
}

impl Default for AnvilOptions {
    fn default() -> Self {
        AnvilOptions {
            port: 0,
            block_time: None,
            state: None,
            accounts: 1,
        }
    }
}

/// A running anvil; killed when dropped (call [`AnvilChild::stop`] for a graceful stop).
pub struct AnvilChild {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The first dev account's private key (hex, `0x…`), funded by anvil.
    pub dev_key: String,
}

/// How long anvil may take to print where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl AnvilChild {
    /// Starts `bin` with `options` and waits until it says where it listens.
    pub fn start(bin: &Path, options: &AnvilOptions) -> Result<AnvilChild, String> {
        let mut command = Command::new(bin);
        command
            .args(["--host", "127.0.0.1", "--port", &options.port.to_string()])
            .args(["--chain-id", &ANVIL_CHAIN_ID.to_string()])
            .args(["--accounts", &options.accounts.max(1).to_string()]);
        match options.block_time {
            None => command.arg("--no-mining"),
            Some(seconds) => command.args(["--block-time", &seconds.max(1).to_string()]),
        };
        if let Some((path, interval)) = &options.state {
            command
                .arg("--state")
                .arg(path)
                .args(["--state-interval", &interval.max(&1).to_string()]);
        }
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        // SAFETY: prctl only, between fork and exec: async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting anvil ({}): {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the banner, then keeps draining so anvil never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut dev_key, mut in_keys) = (None, false);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "anvil ({}) did not say where it listens within {:?} ({status}); \
                         is port {} taken?",
                        bin.display(),
                        START_TIMEOUT,
                        options.port
                    ));
                }
            };
            let line = line.trim();
            if line.starts_with("Private Keys") {
                in_keys = true;
            } else if let (true, Some(key)) = (in_keys, line.strip_prefix("(0) ")) {
                dev_key.get_or_insert_with(|| key.trim().to_string());
            } else if let Some(addr) = line.strip_prefix("Listening on ") {
                break format!("http://{}", addr.trim());
            }
        };
        let dev_key = match dev_key {
            Some(key) => key,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("anvil printed no dev account key before listening".to_string());
            }
        };
        Ok(AnvilChild {
            child,
            url,
            dev_key,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (anvil writes its state file, if it has one), then waits up to `grace` for it
    /// to exit before killing it. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> std::io::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // SAFETY: a signal to our own child, whose pid is not reaped yet (try_wait above).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                return self.child.wait();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AnvilChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
