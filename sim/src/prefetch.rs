//! Cache prefetch hints, so the simulator can ask for the memory of the next few events while
//! it works on this one.

/// Asks the processor to bring the line holding `p` into the cache. A hint only: nothing is
/// read into the program and no address can fault, so any pointer, even a dangling one, is
/// fine. A no-op off x86-64.
#[allow(unsafe_code)]
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads no memory into the program and never faults, whatever the
    // address; SSE, which provides it, is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
