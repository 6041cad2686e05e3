//! The benchmark's allocator: mimalloc, counting the allocations each process makes.
//!
//! CPU time on a shared machine varies by a tenth or more from run to run; the number of
//! allocations a piece of work makes does not, so a change to a hot path is seen in it
//! exactly (each allocation is also where a fresh cache line is touched).
//!
//! Each thread counts in a slot of its own (no two threads share a cache line, so the
//! count costs an uncontended add); [`allocations`] sums the slots.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Threads counted in slots of their own; any later thread shares the last slot.
const SLOTS: usize = 256;

#[repr(align(64))]
struct Slot(AtomicU64);

static COUNTS: [Slot; SLOTS] = [const { Slot(AtomicU64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without a destructor: reading it never allocates (which would recurse).
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_slot() -> &'static AtomicU64 {
    let slot = MY_SLOT
        .try_with(|slot| {
            if slot.get() == usize::MAX {
                slot.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed).min(SLOTS - 1));
            }
            slot.get()
        })
        // A thread being torn down: counted in the shared last slot.
        .unwrap_or(SLOTS - 1);
    &COUNTS[slot].0
}

/// Allocations (and reallocations) this process has made so far, all threads.
pub fn allocations() -> u64 {
    COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
}

/// mimalloc, with every allocation counted.
pub struct Counting(pub mimalloc::MiMalloc);

// SAFETY: every call is passed on unchanged to mimalloc, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        my_slot().fetch_add(1, Ordering::Relaxed);
        self.0.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        my_slot().fetch_add(1, Ordering::Relaxed);
        self.0.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.0.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        my_slot().fetch_add(1, Ordering::Relaxed);
        self.0.realloc(ptr, layout, new_size)
    }
}
