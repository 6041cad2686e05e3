//! A whole node in its own thread and actix system, for the integration tests and the
//! benchmark: killing it closes every socket it holds, and its [`Node`] handle reaches it
//! from the caller's thread.

use std::time::Duration;

use super::{Node, NodeBuilder};

/// A whole node in its own thread and actix system (so a test can kill it and every
/// socket it holds closes), reachable through its [`Node`] handle from the test's thread.
pub struct NodeThread {
    pub node: Node,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeThread {
    /// Starts the node `build` makes; panics if it does not start within 20 s.
    pub fn start(build: impl FnOnce() -> NodeBuilder + Send + 'static) -> NodeThread {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                let node = build().start().await.expect("the node starts");
                ready_tx.send(node.clone()).expect("the caller waits");
                let _ = stop_rx.await;
                node.shutdown().await.expect("a clean shutdown");
            });
        });
        let node = ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("node started");
        NodeThread {
            node,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Shuts the node down and ends its system: every socket of this node closes.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::ops::Deref for NodeThread {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}
