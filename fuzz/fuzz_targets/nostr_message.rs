//! Decode arbitrary bytes as a BTP-NIPs packet and read the NIP-01 message in it (REQ,
//! CLOSE, EVENT, EOSE, NOTICE, and OK answers), as the event flow does with what a peer
//! sends. Reading never panics; a message read, written back and read again is the same
//! message (writing is idempotent after one read: whatever JSON a peer spelled, what this
//! node forwards means what it read).
#![no_main]

use btp_nips_node_fuzz::messages::{read_ok, NostrMessage};
use btp_nips_node_fuzz::wire::btp_nips::Packet;
use libfuzzer_sys::fuzz_target;

const SENDER: &str = "g.btp-nips.fuzz";

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    let _ = read_ok(&packet);
    let Ok(message) = NostrMessage::read(&packet) else {
        return;
    };
    let written = message.to_packet(SENDER, 1);
    let again = NostrMessage::read(&written).expect("a message written back reads again");
    assert_eq!(
        again.to_packet(SENDER, 1).payload.nostr,
        written.payload.nostr,
        "reading back what was written changed the message"
    );
});
