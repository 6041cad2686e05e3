//! What the devnet prints: a table of its nodes, then one line per peer state change across
//! the network (peers named by their node's name), and one line when every link is
//! connected (with its channel, on a chain) saying how long that took from the start.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};

use super::nodes::DevNode;
use crate::lifecycle::PeerState;
use crate::node::{Node, Notification, PeerChange};

/// Prints the table of nodes.
pub fn print_table(nodes: &[DevNode], dir: &std::path::Path) {
    println!();
    println!(
        "{:<7} {:<18} {:<28} {:<24} dashboard (token in the link: kept in the tab, never sent)",
        "node", "npub", "BTP endpoint", "admin API"
    );
    for n in nodes {
        let e = &n.entry;
        let npub = format!("{}…{}", &e.npub[..10], &e.npub[e.npub.len() - 6..]);
        let token = std::fs::read_to_string(n.token_file()).unwrap_or_default();
        println!(
            "{:<7} {:<18} {:<28} {:<24} {}/#token={}",
            e.name,
            npub,
            e.btp_endpoint(),
            e.admin_url(),
            e.admin_url(),
            token.trim()
        );
    }
    println!();
    println!(
        "tokens: {dir}/<node>/admin-token (admin), read-token (read-only); \
         CLI: btp-nips-node --config {dir}/<node>/node.yaml status",
        dir = dir.display()
    );
    println!();
}

/// One state change of one node, for the printer.
pub struct Change {
    pub node: String,
    pub change: PeerChange,
}

/// Forwards `node`'s state changes to the printer until the node stops.
pub fn forward(name: String, node: &Node, to: mpsc::UnboundedSender<Change>) {
    let mut changes = node.notifications();
    let node = node.clone();
    actix::spawn(async move {
        loop {
            tokio::select! {
                received = changes.recv() => match received {
                    Ok(Notification::State(change)) => {
                        if to.send(Change { node: name.clone(), change: *change }).is_err() {
                            return;
                        }
                    }
                    // Channel progress, follows and heartbeats: the printer shows states.
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        println!("{name}: {n} state changes not shown (the printer fell behind)");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = node.stopped() => return,
            }
        }
    });
}

/// Prints every change as it comes, naming peers by their node, and says once when all
/// `links` (node, peer) are connected (with a channel when `channels`).
pub async fn print_changes(
    mut changes: mpsc::UnboundedReceiver<Change>,
    names: HashMap<String, String>,
    links: usize,
    channels: bool,
    started: Instant,
) {
    let mut up: BTreeSet<(String, String)> = BTreeSet::new();
    let mut announced = false;
    while let Some(Change { node, change }) = changes.recv().await {
        let r = &change.record;
        let peer = names
            .get(&r.nostr_pubkey)
            .cloned()
            .unwrap_or_else(|| r.nostr_pubkey[..12.min(r.nostr_pubkey.len())].to_string());
        let from = change.from.map_or("new".to_string(), |s| s.to_string());
        let mut line = format!(
            "{:>7.1}s  {node:<7} peer {peer:<7} {from} -> {}",
            started.elapsed().as_secs_f64(),
            r.state
        );
        if let Some(reason) = &r.failure_reason {
            line.push_str(&format!(": {reason}"));
        }
        if r.state == PeerState::Connected {
            if let Some(rtt) = r.rtt_us {
                line.push_str(&format!(" (rtt {:.1} ms)", f64::from(rtt) / 1000.0));
            }
            if let Some(channel) = &r.channel_id {
                line.push_str(&format!(" channel {}", short(channel)));
            }
        }
        println!("{line}");
        let link = (node, r.nostr_pubkey.clone());
        if r.state == PeerState::Connected && (!channels || r.channel_id.is_some()) {
            up.insert(link);
        } else {
            up.remove(&link);
        }
        if !announced && up.len() == links {
            announced = true;
            println!(
                "{:>7.1}s  all {links} links connected{} — Ctrl-C stops the devnet (DIR is kept: run it again to resume)",
                started.elapsed().as_secs_f64(),
                if channels { ", each over a payment channel" } else { "" },
            );
        }
    }
}

fn short(id: &str) -> String {
    if id.len() > 14 {
        format!("{}…", &id[..12])
    } else {
        id.to_string()
    }
}
