//! Decode arbitrary bytes as an ILP packet; whatever decodes must re-encode to the
//! same bytes (the codec is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use btp_nips_node_fuzz::wire::ilp::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        let encoded = packet.encode().expect("a decoded packet encodes");
        assert_eq!(encoded, data, "round trip changed the bytes");
    }
});
