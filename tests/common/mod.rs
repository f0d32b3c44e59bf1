//! Shared test support: start the real `voxloop` binary on a free port, read
//! its metrics and memory, load the shared test audio.
#![allow(dead_code)]

pub mod bus;
pub mod worker;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A config whose models are this repository's `models/`, profile `profile`.
pub fn model_config(profile: &str) -> voxloop::config::Config {
    let mut c = voxloop::config::Config::default();
    c.models.dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    c.models.profile = profile.into();
    c
}

/// A one-question conversation with the default system prompt.
pub fn question(text: &str) -> Vec<voxloop::pipeline::llm::ChatMessage> {
    use voxloop::pipeline::llm::{ChatMessage, DEFAULT_SYSTEM_PROMPT, Role};
    vec![
        ChatMessage::new(Role::System, DEFAULT_SYSTEM_PROMPT),
        ChatMessage::new(Role::User, text),
    ]
}

/// A `voxloop serve` process, killed on drop.
pub struct Server {
    pub url: String,
    child: Child,
}

impl Server {
    /// Start `voxloop serve` with extra args and env vars; waits for its `listening:` line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::start_at("127.0.0.1:0", args, envs)
    }

    /// Like [`Server::start`] on a given address (to restart a server on its old port).
    pub fn start_at(bind: &str, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
        cmd.arg("serve")
            .arg("--bind")
            .arg(bind)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("VOXLOOP_CONFIG")
            .env(
                "VOXLOOP_LOG",
                std::env::var("VOXLOOP_LOG").unwrap_or_else(|_| "info".into()),
            )
            // No NATS unless a test starts one: never touch a developer's
            // server on the default port (its prompts and durable consumer).
            .env("VOXLOOP_NATS_URL", "")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn voxloop");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(url) = line.strip_prefix("listening: ") {
                    let _ = tx.send(url.to_string());
                    sent = true;
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not print its listening line");
        Server { url, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the server process, in KiB (the server's own
    /// `/metrics` reader, so both count the same thing).
    pub fn rss_kib(&self) -> u64 {
        voxloop::metrics::process_rss_bytes(&self.pid().to_string())
            .expect("VmRSS of the server in /proc")
            / 1024
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("{}{}", self.url, path))
            .await
            .expect("http get");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// `PUT` `body` at `path`: the status and the body of the answer.
    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = reqwest::Client::new()
            .put(format!("{}{path}", self.url))
            .body(body)
            .send()
            .await
            .expect("http put");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        voxloop::metrics::parse_sample(&text, name).unwrap_or(0.0)
    }

    /// Wait until no session is live; false if they have not drained in `timeout`.
    pub async fn sessions_drained(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.metric("voxloop_active_sessions").await == 0.0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Send SIGTERM and wait up to `timeout` for the process to exit; its
    /// exit code and how long it took, or `None` if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<(Option<i32>, Duration)> {
        self.signal_term();
        self.wait_exit(timeout)
    }

    /// Send SIGTERM and return at once.
    pub fn signal_term(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Wait up to `timeout` for the process to exit: its code and how long
    /// the wait took, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(Option<i32>, Duration)> {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status.code(), t0.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Live sessions as `/healthz` counts them (slots included that are
    /// still answering their offer).
    pub async fn healthz_sessions(&self) -> u64 {
        let (_, body) = self.get("/healthz").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("healthz json");
        v["sessions"].as_u64().expect("healthz sessions")
    }

    /// Wait until `/healthz` counts no session (answered offers included,
    /// which the metrics gauge does not see); how long that took, or `None`.
    pub async fn slots_free(&self, within: Duration) -> Option<Duration> {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < within {
            if self.healthz_sessions().await == 0 {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client-side peer with its offer SDP, candidates included (no trickle).
pub async fn real_offer() -> (voxloop::rtc::Peer, voxloop::rtc::PeerStreams, String) {
    let (peer, mut streams, sdp) = voxloop::rtc::Peer::offer(&Default::default())
        .await
        .expect("offer");
    let (gathered, _) =
        voxloop::rtc::wait_gathered(&mut streams.events, Duration::from_secs(2)).await;
    assert!(gathered, "ICE gathering did not finish");
    let sdp = peer.local_sdp().await.unwrap_or(sdp);
    (peer, streams, sdp)
}

/// A user joining over WHIP with a real peer: offer, answer, connected.
/// Returns the peer, its streams and the session's `Location`.
pub async fn whip_join(url: &str) -> (voxloop::rtc::Peer, voxloop::rtc::PeerStreams, String) {
    let (peer, mut streams, offer) = real_offer().await;
    let r = reqwest::Client::new()
        .post(format!("{url}/whip"))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .expect("POST /whip");
    assert_eq!(r.status().as_u16(), 201, "WHIP join refused");
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(location.starts_with("/whip/"), "{location}");
    let answer = r.text().await.expect("answer");
    assert!(answer.contains("a=candidate"), "answer without candidates");
    peer.accept_answer(&answer).await.expect("accept answer");
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = streams.events.recv().await {
            if ev == voxloop::rtc::PeerEvent::Connected {
                return;
            }
        }
        panic!("events ended before connecting");
    })
    .await
    .expect("WHIP peer connects");
    (peer, streams, location)
}

/// A test auth key (32+ bytes, as HS256 wants).
pub const AUTH_KEY: &str = "test-key-0123456789-0123456789-0123456789";

/// `voxloop token ARGS` with `AUTH_KEY`: its last stdout line.
pub fn mint_token(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .arg("token")
        .args(args)
        .env_remove("VOXLOOP_CONFIG")
        .env("VOXLOOP_AUTH_KEY", AUTH_KEY)
        .output()
        .expect("run voxloop token");
    assert!(
        out.status.success(),
        "voxloop token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .last()
        .expect("a line")
        .to_string()
}

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A shared clip at 48 kHz mono.
pub fn clip48(name: &str) -> Vec<f32> {
    voxloop::audio::decode_file_mono(&data(name), voxloop::WIRE_RATE).expect("decode test clip")
}

/// Normalized cross-correlation of `b` against `a` at the best lag in
/// `0..max_lag` (b delayed relative to a). Returns (correlation, lag).
pub fn best_alignment(a: &[f32], b: &[f32], max_lag: usize) -> (f32, usize) {
    let mut best = (f32::MIN, 0);
    for lag in 0..max_lag.min(b.len()) {
        let n = a.len().min(b.len() - lag);
        if n == 0 {
            break;
        }
        let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..n {
            let x = f64::from(a[i]);
            let y = f64::from(b[i + lag]);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        let c = (ab / (aa.sqrt() * bb.sqrt()).max(1e-12)) as f32;
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// A real `nats-server -js` on a free loopback port with its own store,
/// killed on drop. `stop` + `restart` keep the port and the store, as an
/// operator restarting NATS would.
pub struct Nats {
    pub url: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    login: Option<(String, String)>,
}

/// The nats-server binary: `VOXLOOP_NATS_SERVER`, else the one `models fetch` installs.
pub fn nats_server_bin() -> PathBuf {
    match std::env::var_os("VOXLOOP_NATS_SERVER") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/bin/nats-server"),
    }
}

impl Nats {
    pub async fn start() -> Nats {
        Self::start_with("", None).await
    }

    /// With `extra` lines in its config (e.g. an `authorization` block) and
    /// the user and password the readiness probe logs in with.
    pub async fn start_with(extra: &str, login: Option<(&str, &str)>) -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("voxloop-nats-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("nats dir");
        // max_payload above 1 MiB so an oversized prompt reaches the server
        // and is dropped there with a reason.
        let conf = format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{ store_dir: {:?} }}\n{extra}\n",
            dir.join("store").display().to_string()
        );
        std::fs::write(dir.join("nats.conf"), conf).expect("nats conf");
        let mut nats = Nats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
            child: None,
            login: login.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        nats.restart().await;
        nats
    }

    /// Start (again) on the same port with the same store.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let bin = nats_server_bin();
        assert!(
            bin.is_file(),
            "{} is missing: run `make test` (or scripts/models.py fetch) to install nats-server",
            bin.display()
        );
        let child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut options = async_nats::ConnectOptions::new();
            if let Some((u, p)) = &self.login {
                options = options.user_and_password(u.clone(), p.clone());
            }
            if let Ok(c) = options.connect(&self.url).await {
                let js = async_nats::jetstream::new(c);
                if js.query_account().await.is_ok() {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not come up on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kill the server (its store stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
