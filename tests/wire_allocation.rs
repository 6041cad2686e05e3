//! Decoding never allocates what the input only claims: a counting global allocator
//! measures, per thread, the bytes allocated while one decode runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use btp_nips_node::wire::{btp, btp_nips, ilp};

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|c| c.set(c.get().saturating_add(layout.size())));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|c| c.set(c.get().saturating_add(new_size)));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated on this thread while `f` runs.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    let after = ALLOCATED.with(Cell::get);
    (after - before, out)
}

const U64_MAX_CLAIM: [u8; 9] = [0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

fn with(prefix: &[u8], tail: &[u8]) -> Vec<u8> {
    [prefix, tail].concat()
}

#[test]
fn oversize_length_claims_allocate_nothing() {
    // The counter works.
    let (bytes, v) = allocated_by(|| vec![0u8; 100]);
    assert!(bytes >= 100 && v.len() == 100);

    let ilp_inputs = [
        // Envelope contents claiming 2^64-1 bytes, 2^31-1 bytes, 70000 bytes.
        with(&[12], &U64_MAX_CLAIM),
        vec![13, 0x84, 0x7f, 0xff, 0xff, 0xff, 0, 0],
        vec![14, 0x83, 0x01, 0x11, 0x70, 0, 0, 0],
    ];
    for input in &ilp_inputs {
        let (bytes, result) = allocated_by(|| ilp::Packet::decode(input));
        assert!(result.as_ref().unwrap_err().to_string().contains("exceeds"));
        assert_eq!(bytes, 0, "ILP {input:02x?}: {:?}", result);
    }
    let btp_inputs = [
        // Contents claiming 2^64-1 bytes.
        with(&[6, 0, 0, 0, 1], &U64_MAX_CLAIM),
        // A Message claiming 2^64-1 protocol entries.
        vec![
            6, 0, 0, 0, 1, 9, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        // One entry whose data claims 2^64-1 bytes.
        with(&[6, 0, 0, 0, 1, 13, 1, 1, 0, 0], &U64_MAX_CLAIM),
        // An Error whose data claims 1 GiB.
        with(
            &[2, 0, 0, 0, 1, 27, b'F', b'0', b'0', 0, 15],
            b"20171224161432Z\x84\x40\x00\x00\x00\x01\x00",
        ),
    ];
    for input in &btp_inputs {
        let (bytes, result) = allocated_by(|| btp::Packet::decode(input));
        assert!(result.as_ref().unwrap_err().to_string().contains("exceeds"));
        assert_eq!(bytes, 0, "BTP {input:02x?}: {:?}", result);
    }
    // A BTP-NIPs header claiming 65535 payload bytes with 3 present.
    let input = [1, 1, 0xff, 0xff, b'{', b'}', b' '];
    let (bytes, result) = allocated_by(|| btp_nips::Packet::decode(&input));
    assert!(result.is_err());
    assert_eq!(bytes, 0);
}

#[test]
fn memory_follows_the_input_actually_read() {
    // Worst case for BTP: as many empty protocol entries as the bytes can hold.
    let entries = 10_000usize;
    let mut contents = vec![0x02, (entries >> 8) as u8, entries as u8];
    for _ in 0..entries {
        contents.extend_from_slice(&[0, 0, 0]);
    }
    let mut w = btp_nips_node::wire::oer::Writer::new();
    w.write_u8(btp::TYPE_MESSAGE);
    w.write_u32(1);
    w.write_var_octets(&contents);
    let input = w.into_inner();
    let (bytes, result) = allocated_by(|| btp::Packet::decode(&input));
    assert_eq!(result.unwrap().body.protocol_data().len(), entries);
    // ProtocolEntry is a few words per 3 input bytes, plus the Vec's doubling.
    assert!(
        bytes < 64 * input.len(),
        "{bytes} bytes for {} input bytes",
        input.len()
    );

    // A full-size ILP Prepare allocates about its data once.
    let prepare = ilp::Prepare {
        amount: 1,
        expires_at: "20300101000000000".parse().unwrap(),
        execution_condition: [1; 32],
        destination: ilp::Address::new("g.a.b").unwrap(),
        data: vec![9; ilp::MAX_DATA_LEN],
    };
    let input = prepare.encode().unwrap();
    let (bytes, result) = allocated_by(|| ilp::Packet::decode(&input));
    assert!(result.is_ok());
    assert!(
        bytes < input.len() + 256,
        "{bytes} bytes for {} input bytes",
        input.len()
    );
}
