//! Thread priorities. The real-time path — the media runtime, VAD and Smart
//! Turn — keeps the default priority; bulk inference (ASR, LLM, TTS) runs
//! niced, so when the cores are short the turn path is not pre-empted by
//! it and keeps up with real time. Threads a library starts from a niced
//! thread (ggml's compute threads, onnxruntime's intra-op pool) inherit
//! its nice value, so the whole of each engine runs behind.

use std::sync::atomic::{AtomicI32, Ordering};

/// How much nicer than the process bulk inference threads run, set from
/// `inference.bulk_nice` when the engines load (0 by default). At 5, weight
/// 335 against 1024 in Linux's scheduler: a waking real-time thread
/// pre-empts them and gets ~75 % of a contended core; with spare cores they
/// run at full speed. The cost: ggml's threads meet at spinning barriers,
/// and beside busy threads of the same process group (autogroup) niced ones
/// are pre-empted often enough to stall a computation for seconds.
static BULK_NICE: AtomicI32 = AtomicI32::new(0);

/// Set how much bulk threads started from now on are niced (0 = not).
pub fn set_bulk_nice(nice: i32) {
    BULK_NICE.store(nice.clamp(0, 19), Ordering::Relaxed);
}

/// Lower the calling thread's priority by the bulk nice value (at most to
/// 19). Best effort: on failure (or off Linux) the thread keeps its
/// priority, and says so.
pub fn bulk_thread() {
    let by = BULK_NICE.load(Ordering::Relaxed);
    if by == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let target = (current_nice().unwrap_or(0) + by).min(19);
        // SAFETY: plain syscalls on the calling thread; no memory is passed.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid(), target) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower an inference thread's priority");
        }
    }
}

/// The calling thread's id: Linux keeps nice values per thread, by this id.
#[cfg(target_os = "linux")]
fn tid() -> libc::id_t {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::id_t }
}

/// The calling thread's nice value (Linux), for tests and diagnostics.
pub fn current_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // -1 is also a valid nice value, so errno tells an error apart.
        unsafe { *libc::__errno_location() = 0 };
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid()) };
        let failed = unsafe { *libc::__errno_location() } != 0;
        return (!failed).then_some(nice);
    }
    #[allow(unreachable_code)]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_thread_is_niced_and_its_children_inherit_it() {
        let before = current_nice().expect("nice");
        set_bulk_nice(5);
        let want = Some((before + 5).min(19));
        let (own, child) = std::thread::spawn(|| {
            bulk_thread();
            let child = std::thread::spawn(current_nice).join().unwrap();
            (current_nice(), child)
        })
        .join()
        .unwrap();
        assert_eq!(own, want);
        assert_eq!(child, want, "a thread started by a bulk thread");
        assert_eq!(current_nice(), Some(before), "other threads keep theirs");
    }
}
