//! A bounded pool of dedicated threads for blocking inference.
//!
//! Inference (whisper, llama, ONNX models) must never run on the async
//! runtime's worker threads: it would stall every session's media. Each pool
//! owns its threads and a per-thread worker value (a whisper state, an ONNX
//! session), and a queue with a fixed number of slots. When the queue is full
//! [`WorkerPool::try_run`] fails at once with [`Busy`], so callers can answer
//! "one moment, please" instead of piling up work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The pool's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is busy (queue full)")]
pub struct Busy(pub &'static str);

type Job<W> = Box<dyn FnOnce(&mut W) + Send>;

/// Threads each holding a `W`, fed from one bounded queue.
pub struct WorkerPool<W> {
    name: &'static str,
    tx: SyncSender<Job<W>>,
    pending: Arc<AtomicUsize>,
}

impl<W: 'static> WorkerPool<W> {
    /// Start `threads` threads; `make(i)` builds thread `i`'s worker value on
    /// that thread. `queue` is how many jobs may wait beyond those running.
    pub fn new<E, F>(name: &'static str, threads: usize, queue: usize, make: F) -> Result<Self, E>
    where
        F: Fn(usize) -> Result<W, E> + Send + Sync + 'static,
        E: Send + 'static,
    {
        let (tx, rx) = sync_channel::<Job<W>>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let make = Arc::new(make);
        let pending = Arc::new(AtomicUsize::new(0));
        for i in 0..threads.max(1) {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), E>>();
            let rx = rx.clone();
            let make = make.clone();
            let pending = pending.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || match make(i) {
                    Ok(mut worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker_loop(&rx, &mut worker, &pending);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .expect("spawn inference thread");
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => panic!("inference thread {name}-{i} died while starting"),
            }
        }
        Ok(Self { name, tx, pending })
    }

    /// Queue `f` to run on a worker thread; its result arrives on the receiver.
    pub fn try_run<R, F>(&self, f: F) -> Result<oneshot::Receiver<R>, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut W) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let pending = self.pending.clone();
        let job: Job<W> = Box::new(move |w| {
            // A caller that gave up while the job waited (a turn past its start
            // deadline, a hung-up session) gets nothing: skip the work so the
            // queue drains faster under overload.
            if tx.is_closed() {
                pending.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            let r = f(w);
            // Count the job done before its result is visible to the caller.
            pending.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(r);
        });
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(Busy(self.name))
            }
        }
    }

    /// Run `f` and wait for it (queueing error or result).
    pub async fn run<R, F>(&self, f: F) -> Result<R, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut W) -> R + Send + 'static,
    {
        let rx = self.try_run(f)?;
        rx.await.map_err(|_| Busy(self.name))
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

fn worker_loop<W>(rx: &Mutex<Receiver<Job<W>>>, worker: &mut W, pending: &AtomicUsize) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return, // pool dropped
            }
        };
        // A panicking job must not take the thread (and the model) down.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(worker)));
        if r.is_err() {
            // The job did not reach its own accounting.
            pending.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("inference job panicked; worker continues");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_and_refuses_when_full() {
        let pool: WorkerPool<u32> = WorkerPool::new("test", 1, 1, |_| Ok::<u32, ()>(0)).unwrap();
        assert_eq!(
            pool.run(|w| {
                *w += 1;
                *w
            })
            .await
            .unwrap(),
            1
        );
        // Block the only thread, fill the one queue slot, then overflow.
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let blocker = pool
            .try_run(move |_| {
                let _ = gate_rx.recv_timeout(Duration::from_secs(5));
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = pool.try_run(|w| *w).unwrap();
        assert_eq!(pool.try_run(|w| *w).unwrap_err(), Busy("test"));
        gate_tx.send(()).unwrap();
        blocker.await.unwrap();
        assert_eq!(queued.await.unwrap(), 1);
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test]
    async fn abandoned_jobs_are_skipped() {
        let pool: WorkerPool<u32> = WorkerPool::new("skip", 1, 4, |_| Ok::<u32, ()>(0)).unwrap();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let blocker = pool
            .try_run(move |_| {
                let _ = gate_rx.recv_timeout(Duration::from_secs(5));
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queued behind the blocker, then abandoned by its caller.
        let abandoned = pool.try_run(|w| *w += 1).unwrap();
        drop(abandoned);
        gate_tx.send(()).unwrap();
        blocker.await.unwrap();
        assert_eq!(pool.run(|w| *w).await.unwrap(), 0, "the abandoned job ran");
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_kill_the_worker() {
        let pool: WorkerPool<()> = WorkerPool::new("p", 1, 4, |_| Ok::<(), ()>(())).unwrap();
        let rx = pool.try_run(|_| -> u8 { panic!("boom") }).unwrap();
        assert!(rx.await.is_err());
        assert_eq!(pool.run(|_| 7).await.unwrap(), 7);
        assert_eq!(pool.pending(), 0);
    }

    #[test]
    fn construction_errors_are_returned() {
        let r: Result<WorkerPool<()>, String> =
            WorkerPool::new("bad", 2, 1, |i| Err(format!("no model for {i}")));
        assert_eq!(r.err().unwrap(), "no model for 0");
    }
}
