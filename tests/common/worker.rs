//! `voxloop worker` processes for the tests of inference over NATS.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use voxloop::remote::directory::{self, WorkerInfo};

use super::Nats;

/// Every live worker's `STATS`.
pub async fn stats(nats: &async_nats::Client) -> Vec<WorkerInfo> {
    directory::collect(nats).await.expect("worker stats")
}

/// A worker's count `key` (`completed`, `in_flight`, ...) over its endpoints.
pub fn load(w: &WorkerInfo, key: &str) -> u64 {
    w.endpoints
        .iter()
        .map(|e| e.load.get(key).and_then(|v| v.as_u64()).unwrap_or(0))
        .sum()
}

pub fn of<'a>(all: &'a [WorkerInfo], id: &str) -> Option<&'a WorkerInfo> {
    all.iter().find(|w| w.id == id)
}

/// A `voxloop worker` process, killed on drop.
pub struct Worker {
    pub id: String,
    child: Child,
}

impl Worker {
    pub fn start(nats: &Nats, roles: &str) -> Worker {
        Self::start_with(nats, roles, &[])
    }

    /// `start` with `env` set (e.g. NATS credentials).
    pub fn start_with(nats: &Nats, roles: &str, env: &[(&str, &str)]) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voxloop"))
            .args(["worker", "--roles", roles, "--nats-url", &nats.url])
            .envs(env.iter().copied())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("VOXLOOP_CONFIG")
            .env("VOXLOOP_MODELS_PROFILE", "fast")
            .env(
                "VOXLOOP_LOG",
                std::env::var("VOXLOOP_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn voxloop worker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("worker: ") {
                    let id = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(id);
                }
            }
        });
        let id = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("worker did not print its `worker:` line");
        Worker { id, child }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}
