//! A bounded pool of dedicated threads for blocking inference.
//!
//! Inference (whisper, llama, ONNX models) must never run on the async
//! runtime's worker threads: it would stall every session's media. Each pool
//! owns its threads and a per-thread worker value (a whisper state, an ONNX
//! session), and a queue with a fixed number of slots. When the queue is full
//! [`WorkerPool::try_run`] fails at once with [`Busy`], so callers can answer
//! "one moment, please" instead of piling up work.

use std::cmp::Ordering as Cmp;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

/// The pool's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is busy (queue full)")]
pub struct Busy(pub &'static str);

type Job<W> = Box<dyn FnOnce(&mut W) + Send>;

/// A queued job and when its result is needed.
struct Entry<W> {
    due: Instant,
    seq: u64,
    job: Job<W>,
}

impl<W> PartialEq for Entry<W> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<W> Eq for Entry<W> {}
impl<W> PartialOrd for Entry<W> {
    fn partial_cmp(&self, other: &Self) -> Option<Cmp> {
        Some(self.cmp(other))
    }
}
impl<W> Ord for Entry<W> {
    /// Reversed: `BinaryHeap` pops the greatest, the earliest due must come
    /// out first (then the earliest queued).
    fn cmp(&self, other: &Self) -> Cmp {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct State<W> {
    heap: BinaryHeap<Entry<W>>,
    seq: u64,
    /// Workers waiting for a job: a job handed straight to one does not wait.
    idle: usize,
    closed: bool,
}

/// The waiting jobs, earliest due first.
struct Queue<W> {
    state: Mutex<State<W>>,
    ready: Condvar,
}

/// Threads each holding a `W`, fed from one bounded queue ordered by when
/// each job's result is needed (earliest deadline first; equal deadlines in
/// arrival order).
pub struct WorkerPool<W> {
    name: &'static str,
    queue: Arc<Queue<W>>,
    /// Jobs that may wait beyond those handed to idle workers.
    capacity: usize,
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
        let shared = Arc::new(Queue {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                seq: 0,
                idle: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let make = Arc::new(make);
        let pending = Arc::new(AtomicUsize::new(0));
        let pool = Self {
            name,
            queue: shared.clone(),
            capacity: queue,
            pending: pending.clone(),
        };
        for i in 0..threads.max(1) {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), E>>();
            let shared = shared.clone();
            let make = make.clone();
            let pending = pending.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || match make(i) {
                    Ok(mut worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker_loop(&shared, &mut worker, &pending);
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
        Ok(pool)
    }

    /// Queue `f` to run on a worker thread as soon as one is free; its
    /// result arrives on the receiver.
    pub fn try_run<R, F>(&self, f: F) -> Result<oneshot::Receiver<R>, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut W) -> R + Send + 'static,
    {
        self.try_run_by(Instant::now(), f)
    }

    /// Queue `f`, whose result is needed by `due`: jobs due earlier run
    /// first. A session about to fall silent goes before one that still has
    /// seconds of audio to play.
    pub fn try_run_by<R, F>(&self, due: Instant, f: F) -> Result<oneshot::Receiver<R>, Busy>
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
        let Ok(mut st) = self.queue.state.lock() else {
            return Err(Busy(self.name));
        };
        if st.closed || st.heap.len() >= self.capacity + st.idle {
            return Err(Busy(self.name));
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        let seq = st.seq;
        st.seq += 1;
        st.heap.push(Entry { due, seq, job });
        drop(st);
        self.queue.ready.notify_one();
        Ok(rx)
    }

    /// Run `f` and wait for it (queueing error or result).
    pub async fn run<R, F>(&self, f: F) -> Result<R, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut W) -> R + Send + 'static,
    {
        self.run_by(Instant::now(), f).await
    }

    /// Run `f`, due by `due` (see [`Self::try_run_by`]), and wait for it.
    pub async fn run_by<R, F>(&self, due: Instant, f: F) -> Result<R, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut W) -> R + Send + 'static,
    {
        let rx = self.try_run_by(due, f)?;
        rx.await.map_err(|_| Busy(self.name))
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

impl<W> Drop for WorkerPool<W> {
    /// The workers finish what is queued, then end.
    fn drop(&mut self) {
        if let Ok(mut st) = self.queue.state.lock() {
            st.closed = true;
        }
        self.queue.ready.notify_all();
    }
}

fn worker_loop<W>(queue: &Queue<W>, worker: &mut W, pending: &AtomicUsize) {
    loop {
        let job = {
            let Ok(mut st) = queue.state.lock() else {
                return;
            };
            loop {
                if let Some(e) = st.heap.pop() {
                    break e.job;
                }
                if st.closed {
                    return; // pool dropped
                }
                st.idle += 1;
                st = match queue.ready.wait(st) {
                    Ok(s) => s,
                    Err(_) => return,
                };
                st.idle -= 1;
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

    /// Occupy the pool's only thread until the returned sender sends.
    async fn block<W: 'static>(
        pool: &WorkerPool<W>,
    ) -> (std::sync::mpsc::Sender<()>, oneshot::Receiver<()>) {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let blocker = pool
            .try_run(move |_| {
                let _ = gate_rx.recv_timeout(Duration::from_secs(5));
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        (gate_tx, blocker)
    }

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
        let (gate_tx, blocker) = block(&pool).await;
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
        let (gate_tx, blocker) = block(&pool).await;
        // Queued behind the blocker, then abandoned by its caller.
        let abandoned = pool.try_run(|w| *w += 1).unwrap();
        drop(abandoned);
        gate_tx.send(()).unwrap();
        blocker.await.unwrap();
        assert_eq!(pool.run(|w| *w).await.unwrap(), 0, "the abandoned job ran");
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test]
    async fn the_earliest_due_job_runs_first() {
        let pool: WorkerPool<Vec<&str>> =
            WorkerPool::new("edf", 1, 8, |_| Ok::<_, ()>(Vec::new())).unwrap();
        let (gate_tx, blocker) = block(&pool).await;
        let now = Instant::now();
        let secs = Duration::from_secs;
        let mut results = Vec::new();
        for (due, name) in [
            (now + secs(3), "speaking, 3 s buffered"),
            (now + secs(1), "speaking, 1 s buffered"),
            (now, "first audio"),
            (now, "first audio, queued later"),
        ] {
            results.push(
                pool.try_run_by(due, move |w: &mut Vec<&str>| w.push(name))
                    .unwrap(),
            );
        }
        gate_tx.send(()).unwrap();
        blocker.await.unwrap();
        for r in results {
            r.await.unwrap();
        }
        let order = pool.run(|w| w.clone()).await.unwrap();
        assert_eq!(
            order,
            [
                "first audio",
                "first audio, queued later",
                "speaking, 1 s buffered",
                "speaking, 3 s buffered"
            ]
        );
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
