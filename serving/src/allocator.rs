//! How the process's allocator (mimalloc, the binaries' `#[global_allocator]`) treats the
//! memory it frees.

/// mimalloc's `mi_option_purge_delay` (the order of `mi_option_e` in the bundled v3
/// `mimalloc.h`; `libmimalloc-sys` names only some of the options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the memory the process frees for its next allocations rather than handing it
/// back to the OS a second later (mimalloc's default), unless `MIMALLOC_PURGE_DELAY` says
/// otherwise. Handing it back and faulting it in again, zeroed, page by page, took up to
/// a third of a report's time over the history and about a tenth of the order path's
/// throughput with the metrics and history on; the resident set stays at its peak
/// instead (BENCHMARKS.md). Called first thing by `tidemark` and by the benchmarks that
/// run its engines in their own process. Only has an effect when mimalloc is the
/// process's allocator.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option mimalloc reads whenever it considers purging.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
