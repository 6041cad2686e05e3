//! Decode arbitrary bytes as a BTP packet; whatever decodes must re-encode to the
//! same bytes, and its `ilp` entry, if any, must decode without panicking. The in-place
//! reader of a Response's `ilp` entry (how a PONG is read) must agree with the decoder:
//! the same bytes accepted, the same error, the same entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use btp_nips_node_fuzz::wire::btp::{self, Body, Packet};
use btp_nips_node_fuzz::wire::ilp;

fuzz_target!(|data: &[u8]| {
    let decoded = Packet::decode(data);
    match (&decoded, btp::read_response_ilp(data)) {
        (Ok(packet), Ok(read)) => {
            let expected = match packet.body {
                Body::Response(_) => packet.ilp_data(),
                _ => None,
            };
            assert_eq!(read, expected, "the in-place reader found another entry");
            if let Some(entry) = read {
                let fulfill = ilp::Fulfill::decode(entry);
                let in_place = ilp::Fulfill::read(entry);
                assert_eq!(
                    fulfill.as_ref().map(|f| (f.fulfillment, f.data.as_slice())).map_err(|e| e.to_string()),
                    in_place.map_err(|e| e.to_string()),
                    "the in-place Fulfill reader disagrees"
                );
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, &b, "the in-place reader failed otherwise"),
        (a, b) => panic!("decode {a:?}, in-place reader {b:?}"),
    }
    if let Ok(packet) = decoded {
        let encoded = packet.encode().expect("a decoded packet encodes");
        assert_eq!(encoded, data, "round trip changed the bytes");
        let _ = packet.decode_ilp();
        let _ = btp::parse_auth(&packet);
    }
});
