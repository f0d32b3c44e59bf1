//! One bulk inference computation at a time in this process: ggml
//! (Whisper, the LLM) and Piper.
//!
//! whisper.cpp and llama.cpp both compute on ggml, whose worker threads meet
//! at a barrier after every graph node and wait there by spinning. Two
//! computations at once (a transcription while the LLM decodes) put four
//! spinning threads on two cores: every barrier then waits for a thread the
//! OS has descheduled, and both run many times slower than one after the
//! other. The load tester showed it with two sessions: a first sentence that
//! takes 0.6 s alone took 11.6 s while another session's transcription ran.
//!
//! Piper (ONNX Runtime) does not spin, but its threads beside the LLM's two
//! make three on two cores, which stalls ggml's barriers the same way: a
//! first piece synthesized while the LLM decoded took 250–330 ms, alone
//! with two threads 160–240 ms (docs/BENCHMARKS.md). So it goes through the
//! gate too, with the machine's threads.
//!
//! Whisper holds the gate for a transcription, the LLM engine for one decode
//! step, Piper for one piece, so a transcription or a piece waits at most
//! one LLM step (or one prompt chunk) and the LLM at most one transcription
//! or piece. Waiters are served in arrival
//! order (a ticket lock): the LLM engine, which re-enters after every token,
//! cannot starve a waiting transcription.

use std::sync::{Condvar, Mutex, MutexGuard};

/// A FIFO lock around CPU-heavy native computations.
pub struct ComputeGate {
    tickets: Mutex<Tickets>,
    turn: Condvar,
}

struct Tickets {
    next: u64,
    serving: u64,
}

/// Held while computing; the next waiter goes on drop.
pub struct GateGuard<'a> {
    gate: &'a ComputeGate,
}

static BULK: ComputeGate = ComputeGate::new();

/// The gate every ggml and Piper computation in the process goes through.
pub fn bulk() -> &'static ComputeGate {
    &BULK
}

impl ComputeGate {
    pub const fn new() -> Self {
        Self {
            tickets: Mutex::new(Tickets {
                next: 0,
                serving: 0,
            }),
            turn: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tickets> {
        // The counters stay consistent even if a holder panicked.
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for this caller's turn (blocking: call from inference threads only).
    pub fn enter(&self) -> GateGuard<'_> {
        let mut t = self.lock();
        let mine = t.next;
        t.next += 1;
        while t.serving != mine {
            t = self.turn.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        GateGuard { gate: self }
    }
}

impl Default for ComputeGate {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.gate.lock().serving += 1;
        self.gate.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_at_a_time_in_arrival_order() {
        let gate = Arc::new(ComputeGate::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = gate.enter();
        let mut threads = Vec::new();
        for i in 0..4 {
            let (gate, inside, order) = (gate.clone(), inside.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _g = gate.enter();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two inside");
                order.lock().unwrap().push(i);
                std::thread::sleep(Duration::from_millis(5));
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
            // Let thread i take its ticket before thread i+1.
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }
}
