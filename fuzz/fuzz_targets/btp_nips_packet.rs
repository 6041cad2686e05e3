//! Decode arbitrary bytes as a BTP-NIPs packet; whatever decodes must re-encode to a
//! packet that decodes to the same value. (JSON is not byte-canonical: whitespace,
//! key order and number spelling may change, and `1e9` re-encodes longer, so an
//! input near the size limit may be refused as too large — never truncated.) The
//! heartbeat's nonce reader accepts exactly what decode accepts, with the same nonce.
#![no_main]

use libfuzzer_sys::fuzz_target;
use btp_nips_node_fuzz::wire::btp_nips::{decode_nonce, BtpNipsError, Packet, MAX_PACKET_LEN};

fuzz_target!(|data: &[u8]| {
    let read = decode_nonce(data);
    let decoded = Packet::decode(data);
    assert_eq!(read.is_ok(), decoded.is_ok(), "nonce reader {read:?}, decode {decoded:?}");
    if let (Ok((message_type, nonce)), Ok(packet)) = (&read, &decoded) {
        assert_eq!(*message_type, packet.message_type);
        assert_eq!(nonce.as_deref(), packet.nonce());
    }
    if let Ok(packet) = decoded {
        match packet.encode() {
            Ok(encoded) => {
                assert!(encoded.len() <= MAX_PACKET_LEN);
                let again = Packet::decode(&encoded).expect("a re-encoded packet decodes");
                assert_eq!(again, packet, "round trip changed the packet");
            }
            Err(BtpNipsError::TooLarge { .. }) => {}
            Err(e) => panic!("a decoded packet failed to encode: {e}"),
        }
    }
});
