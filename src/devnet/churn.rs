//! `devnet --scenario churn`: one disruption every period, in turn a node restarted (its
//! peers see it go and come back; it recovers its peers from its database) and a follow
//! flipped (a node unfollows one peer, which it disconnects on purpose, and follows it again
//! the next time), for watching recovery in the printed lines and the dashboards.

use std::time::Duration;

use super::{Devnet, DevnetError};

/// Runs the scenario until an error (the caller stops it at SIGINT).
pub async fn run(devnet: &mut Devnet, period: Duration) -> Result<(), DevnetError> {
    let n = devnet.nodes.len();
    let mut timer = tokio::time::interval(period);
    // The first tick is immediate: let the network come up first.
    timer.tick().await;
    let mut unfollowed: Option<(usize, usize)> = None;
    let mut step = 0u64;
    loop {
        timer.tick().await;
        step += 1;
        if step % 2 == 1 {
            let i = fastrand::usize(..n);
            let name = devnet.nodes[i].entry.name.clone();
            println!("churn: restarting {name}");
            devnet.nodes[i].stop().await?;
            devnet.start_node(i).await?;
            println!("churn: {name} is back");
        } else {
            let (i, j) = match unfollowed.take() {
                Some(pair) => pair,
                None => {
                    let i = fastrand::usize(..n);
                    let j = (i + 1 + fastrand::usize(..n - 1)) % n;
                    let follows: Vec<usize> = (0..n).filter(|&k| k != i && k != j).collect();
                    devnet.publish_follows(i, &follows).await?;
                    println!(
                        "churn: {} unfollows {}",
                        devnet.nodes[i].entry.name, devnet.nodes[j].entry.name
                    );
                    unfollowed = Some((i, j));
                    continue;
                }
            };
            let follows: Vec<usize> = (0..n).filter(|&k| k != i).collect();
            devnet.publish_follows(i, &follows).await?;
            println!(
                "churn: {} follows {} again",
                devnet.nodes[i].entry.name, devnet.nodes[j].entry.name
            );
        }
    }
}
