//! A hint to the CPU to start loading memory that will be read soon. Per-series state is spread
//! over the heap, so with thousands of series per thread each point's lookup misses the caches
//! several times in a row; asking for the next points' lines while this one is processed lets
//! those misses overlap instead of adding up.

/// Starts loading the cache line at `p` (no effect where the target has no prefetch).
#[inline(always)]
pub fn prefetch<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults, whatever the address, and changes
    // nothing the program can observe.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const u8 as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
