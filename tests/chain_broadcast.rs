//! How each signed channel open ends, step by step against a real local chain (anvil,
//! `--no-mining`), with the moment a transaction is on its way to the pool held open by a
//! proxy ([`SendGate`]) instead of left to timing.

mod support;

use std::sync::Arc;

use alloy::primitives::{Address, U256};
use btp_nips_node::chain::EvmChannels;
use btp_nips_node::ports::{ChannelPort, ChannelStatus, PeerTarget};
use support::chain::{ChainFixture, SendGate, ETH};

const CONFIRMATIONS: u64 = 2;

impl ChainFixture {
    fn adapter(&self, url: &str) -> Arc<EvmChannels> {
        let caps = Some((ETH, 10 * ETH));
        Arc::new(self.adapter_with(url, CONFIRMATIONS, ChainFixture::policy(caps)))
    }

    /// The nonce of a transaction the chain knows (pool or block).
    async fn nonce_of(&self, tx: &str) -> u64 {
        let known = self
            .chain_tx(tx)
            .await
            .unwrap_or_else(|| panic!("{tx} is known to the chain"));
        alloy::consensus::Transaction::nonce(&known)
    }
}

fn peer(n: u8) -> PeerTarget {
    PeerTarget {
        nostr_pubkey: format!("{:0>64}", n),
        ilp_address: None,
        endpoint: None,
        base_address: Some(Address::repeat_byte(n).to_string()),
        followed: true,
        event_cursor: None,
    }
}

/// Two peers need channels at once: the first open is on its way to the pool (handed to
/// the endpoint, not yet in the pool's pending count) when the second is signed. The
/// second must not take the first one's nonce, or the chain refuses it and the link waits
/// for the re-check.
#[tokio::test]
async fn an_open_signed_while_another_is_on_its_way_to_the_pool_takes_the_next_nonce() {
    let f = ChainFixture::new().await;
    let gate = SendGate::start(&f.anvil.url).await;
    let adapter = f.adapter(&gate.url);
    let first = adapter.open_channel(&peer(1), None).await.expect("signs");

    gate.close();
    let sending = tokio::spawn({
        let (adapter, first) = (adapter.clone(), first.clone());
        async move { adapter.broadcast_open(&first).await }
    });
    gate.held(1).await;
    let second = adapter.open_channel(&peer(2), None).await.expect("signs");
    gate.open();

    assert_eq!(sending.await.unwrap(), Ok(()), "the first open is sent");
    assert_eq!(
        adapter.broadcast_open(&second).await,
        Ok(()),
        "the second open is accepted by the chain too"
    );
    assert_ne!(f.nonce_of(&first).await, f.nonce_of(&second).await);
    f.anvil.mine(CONFIRMATIONS).await;
    for tx in [&first, &second] {
        assert!(
            matches!(
                adapter.channel_status(tx).await,
                Ok(ChannelStatus::Confirmed { .. })
            ),
            "{tx} confirmed"
        );
    }
    assert_eq!(f.open_count().await, U256::from(2));
}

/// An open whose broadcast never happened (the step was lost) is sent by the status check
/// with the very bytes that were signed: same hash, same nonce, nothing signed again.
#[tokio::test]
async fn an_open_signed_and_never_sent_is_sent_as_signed_by_the_status_check() {
    let f = ChainFixture::new().await;
    let adapter = f.adapter(&f.anvil.url);
    let tx = adapter.open_channel(&peer(1), None).await.expect("signs");
    assert_eq!(
        adapter.channel_status(&tx).await,
        Ok(ChannelStatus::Pending { confirmations: 0 }),
        "sent now rather than reported dropped"
    );
    assert_eq!(f.nonce_of(&tx).await, 0);
    f.anvil.mine(CONFIRMATIONS).await;
    assert!(matches!(
        adapter.channel_status(&tx).await,
        Ok(ChannelStatus::Confirmed { .. })
    ));
    assert_eq!(f.open_count().await, U256::from(1));
}

/// An open the core will never send (the peer moved on) is abandoned: the next open
/// reuses its nonce, so no gap holds later opens back in the pool.
#[tokio::test]
async fn an_abandoned_open_gives_its_nonce_to_the_next_open() {
    let f = ChainFixture::new().await;
    let adapter = f.adapter(&f.anvil.url);
    let sent = adapter.open_channel(&peer(1), None).await.expect("signs");
    let abandoned = adapter.open_channel(&peer(2), None).await.expect("signs");
    let later = adapter.open_channel(&peer(3), None).await.expect("signs");
    adapter
        .abandon_open(&abandoned, "the peer moved on before it was recorded")
        .await;
    // To another payee: signing is deterministic, the same open again would be the same
    // transaction.
    let replacement = adapter.open_channel(&peer(4), None).await.expect("signs");
    for tx in [&sent, &later, &replacement] {
        adapter.broadcast_open(tx).await.expect("broadcast");
    }
    assert!(
        adapter.broadcast_open(&abandoned).await.is_err(),
        "an abandoned open is never sent"
    );
    assert_eq!(f.nonce_of(&sent).await, 0);
    assert_eq!(f.nonce_of(&replacement).await, 1, "the abandoned nonce");
    assert_eq!(f.nonce_of(&later).await, 2);
    f.anvil.mine(CONFIRMATIONS).await;
    assert_eq!(
        f.open_count().await,
        U256::from(3),
        "no gap: all three land"
    );
}
