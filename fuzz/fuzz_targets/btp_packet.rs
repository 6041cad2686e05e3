//! Decode arbitrary bytes as a BTP packet; whatever decodes must re-encode to the
//! same bytes, and its `ilp` entry, if any, must decode without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use btp_nips_node_fuzz::wire::btp::{self, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        let encoded = packet.encode().expect("a decoded packet encodes");
        assert_eq!(encoded, data, "round trip changed the bytes");
        let _ = packet.decode_ilp();
        let _ = btp::parse_auth(&packet);
    }
});
