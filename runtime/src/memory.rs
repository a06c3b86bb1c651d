//! How the process keeps the memory it frees.
//!
//! glibc's allocator serves every block above 128 KiB with its own `mmap`
//! and hands it back on free, and trims the heap's top back to the OS: a
//! training step of the vision-language policy allocates tens of MB of
//! buffers (im2col columns, feature maps) and frees them again, so every
//! step faulted in fresh zeroed pages. Measured (`cerebellum bench vla`,
//! one thread): 309 cloning samples/s with 9.5 s of 22 s in the kernel,
//! against 479 samples/s with 0.1 s once freed memory is kept
//! (docs/BENCHMARKS.md, "Vision-language policy"). On a robot's board the
//! same faults are jitter in the control loop. So the binary keeps what it
//! frees for reuse: blocks up to 32 MiB come from the heap, and the heap is
//! not trimmed. The process's footprint stays at its high-water mark,
//! which `train` reports (`peak_memory_mib`).

/// Asks glibc to keep freed memory (no-op elsewhere).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it is called once
        // at start-up, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
