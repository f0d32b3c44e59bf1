//! The `voxloop` command line: the binary edge, where errors become `anyhow`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use voxloop::config::{Config, PipelineKind};

mod kb_cli;
mod models_cli;
mod speech_cli;
mod worker_cli;

use kb_cli::KbDirArgs;
use models_cli::ModelsArgs;

/// Crates whose per-packet debug output would drown everything else.
const QUIET: &str = "async_nats=error,webrtc=warn,rtc=warn,rtc_ice=error,rtc_dtls=error,rtc_sctp=warn,rtc_srtp=warn,rtc_interceptor=warn,rtc_datachannel=warn,rtc_mdns=warn";

#[derive(Parser)]
#[command(
    name = "voxloop",
    version,
    about = "Real-time voice conversation server"
)]
struct Cli {
    /// TOML config file (also VOXLOOP_CONFIG). Env vars and flags override it.
    #[arg(long, global = true, env = "VOXLOOP_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: web page, signaling, media sessions.
    Serve(ServeArgs),
    /// Run the speech pipeline on audio files: prints transcript, reply and timings.
    Converse(speech_cli::ConverseArgs),
    /// Transcribe audio files (any format symphonia reads): `FILE<TAB>text` per line.
    Transcribe(speech_cli::TranscribeArgs),
    /// Speak text with the TTS voice into a WAV file.
    SayText(speech_cli::SayTextArgs),
    /// Publish a proactive prompt over NATS and wait until it is spoken or dropped.
    Say(SayArgs),
    /// Serve ASR, LLM and TTS to `serve --inference nats` over NATS.
    Worker(worker_cli::WorkerArgs),
    /// List the live workers, their roles and load (exit 1 when none).
    Workers(worker_cli::WorkersArgs),
    /// Follow conversations on NATS and publish follow-up questions as prompts.
    IntentWorker(IntentArgs),
    /// Load a running server with virtual users (real WebRTC clients) and report latency.
    Loadtest(voxloop::loadtest::LoadtestArgs),
    /// Mint a join token (HS256 JWT) with the configured auth key; prints it
    /// (or, with --url, a join link) alone on its last line.
    Token(TokenArgs),
    /// Fetch, list and verify the local models (models/manifest.toml).
    Models {
        #[command(subcommand)]
        action: models_cli::ModelsAction,
    },
    /// The knowledge base: index a folder of documents, search it.
    Kb {
        #[command(subcommand)]
        action: kb_cli::KbAction,
    },
}

#[derive(Args)]
struct TokenArgs {
    /// Who holds the token (a user id, a service name).
    #[arg(long)]
    identity: String,
    /// Bind the token to this session id: it joins and resumes only that id.
    #[arg(long)]
    session: Option<String>,
    /// What it may do (repeat or comma-separate): join, prompt, admin.
    #[arg(
        long = "grant",
        value_enum,
        value_delimiter = ',',
        default_value = "join"
    )]
    grants: Vec<voxloop::auth::Grant>,
    /// How long it is valid: 30m, 1h, 7d is 168h.
    #[arg(long, default_value = "1h", value_parser = voxloop::config::parse_duration)]
    ttl: std::time::Duration,
    /// Sign with this key id instead of the first configured key.
    #[arg(long)]
    kid: Option<String>,
    /// Print a join link for the web page (the token in its fragment) instead.
    #[arg(long)]
    url: bool,
    /// The server's base URL for --url (default: http:// and the configured bind).
    #[arg(long)]
    base_url: Option<String>,
}

#[derive(Args)]
struct SayArgs {
    /// The text to speak.
    text: String,
    /// Live session to speak into.
    #[arg(
        long,
        required_unless_present = "broadcast",
        conflicts_with = "broadcast"
    )]
    session: Option<String>,
    /// Speak into every live session.
    #[arg(long)]
    broadcast: bool,
    /// Higher is spoken first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Drop the prompt if not spoken within this time (e.g. 30s, 2m).
    #[arg(long, value_parser = voxloop::config::parse_duration)]
    expires_in: Option<std::time::Duration>,
    /// A newer prompt with the same key replaces this one while it waits.
    #[arg(long)]
    dedupe_key: Option<String>,
    /// May cut the assistant's own reply (never the user).
    #[arg(long)]
    interrupt: bool,
    /// Prompt id (default: random). Republishing an id is a no-op.
    #[arg(long)]
    id: Option<String>,
    /// NATS server URL (VOXLOOP_NATS_URL).
    #[arg(long)]
    nats_url: Option<String>,
    /// How long to wait for the outcome (0 = publish only).
    #[arg(long, default_value = "60s", value_parser = voxloop::config::parse_duration)]
    timeout: std::time::Duration,
}

#[derive(Args)]
struct IntentArgs {
    /// NATS server URL (VOXLOOP_NATS_URL).
    #[arg(long)]
    nats_url: Option<String>,
    /// Silence before a follow-up, e.g. 20s (VOXLOOP_INTENT_QUIET_MS).
    #[arg(long, value_parser = voxloop::config::parse_duration)]
    quiet: Option<std::time::Duration>,
    #[command(flatten)]
    models: ModelsArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// HTTP listen address (VOXLOOP_BIND); port 0 picks a free one.
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// Conversation pipeline (VOXLOOP_PIPELINE).
    #[arg(long, value_enum)]
    pipeline: Option<PipelineKind>,
    /// Directory served at / (VOXLOOP_WEB_DIR).
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// NATS server URL (VOXLOOP_NATS_URL).
    #[arg(long)]
    nats_url: Option<String>,
    /// Most concurrent sessions (VOXLOOP_MAX_SESSIONS).
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Where ASR, LLM and TTS run: local or nats (workers) (VOXLOOP_INFERENCE).
    #[arg(long, value_enum)]
    inference: Option<voxloop::config::InferenceMode>,
    /// Serve a non-loopback address without auth (VOXLOOP_INSECURE_NO_AUTH).
    #[arg(long)]
    insecure_no_auth: bool,
    #[command(flatten)]
    kb: KbDirArgs,
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    Ok(config)
}

fn init_tracing(filter: &str) {
    let filter = EnvFilter::try_new(format!("{QUIET},{filter}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{QUIET},info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Serve(args) => {
            if let Some(v) = args.bind {
                config.bind = v;
            }
            if let Some(v) = args.pipeline {
                config.pipeline = v;
            }
            if let Some(v) = args.web_dir {
                config.web_dir = v;
            }
            if let Some(v) = args.nats_url {
                config.nats_url = v;
            }
            if let Some(v) = args.max_sessions {
                config.max_sessions = v;
            }
            if let Some(v) = args.inference {
                config.inference.mode = v;
            }
            config.auth.insecure_no_auth |= args.insecure_no_auth;
            args.kb.apply(&mut config);
            config.validate()?;
            init_tracing(&config.log);
            eprintln!("# effective configuration\n{}", config.redacted_toml());
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(voxloop::server::serve(config, drain_signal()))
                .context("server failed")?;
        }
        Command::Token(args) => {
            let keys = voxloop::auth::KeySet::new(
                config
                    .auth
                    .keys
                    .iter()
                    .map(|k| (k.kid.as_str(), k.secret.as_str())),
            )
            .map_err(anyhow::Error::msg)?;
            if let Some(sid) = &args.session
                && !voxloop::bus::valid_session_id(sid)
            {
                anyhow::bail!("--session must be 8 to 64 letters, digits, '-' or '_'");
            }
            let now = voxloop::auth::unix_now();
            let claims = voxloop::auth::Claims {
                sub: args.identity,
                sid: args.session,
                grants: args.grants,
                exp: now + args.ttl.as_secs(),
                nbf: None,
                iat: now,
            };
            let token = keys
                .mint(&claims, args.kid.as_deref())
                .map_err(anyhow::Error::msg)?;
            if args.url {
                let base = args
                    .base_url
                    .unwrap_or_else(|| format!("http://{}", config.bind));
                println!("{}/#token={token}", base.trim_end_matches('/'));
            } else {
                println!("{token}");
            }
        }
        Command::Models { action } => {
            let code = models_cli::run(&action, &mut config)?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Kb { action } => {
            init_tracing(&config.log);
            let code = kb_cli::run(action, config)?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Converse(args) => {
            args.models.apply(&mut config);
            args.kb.apply(&mut config);
            init_tracing(&config.log);
            runtime()?.block_on(speech_cli::converse(&config, &args))?;
        }
        Command::Transcribe(args) => {
            args.models.apply(&mut config);
            init_tracing(&config.log);
            let code = runtime()?.block_on(speech_cli::transcribe(&config, &args.files))?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Say(args) => {
            if let Some(v) = &args.nats_url {
                config.nats_url = v.clone();
            }
            init_tracing(&config.log);
            let code = runtime()?.block_on(say(&config, args))?;
            std::process::exit(code);
        }
        Command::Worker(args) => {
            init_tracing(&config.log);
            runtime()?.block_on(worker_cli::worker(config, args, drain_signal()))?;
        }
        Command::Workers(args) => {
            init_tracing(&config.log);
            let code = runtime()?.block_on(worker_cli::workers(config, args))?;
            std::process::exit(code);
        }
        Command::IntentWorker(args) => {
            if let Some(v) = &args.nats_url {
                config.nats_url = v.clone();
            }
            if let Some(q) = args.quiet {
                config.intent.quiet_ms = q.as_millis() as u64;
            }
            args.models.apply(&mut config);
            init_tracing(&config.log);
            let cancel = tokio_util::sync::CancellationToken::new();
            let c = cancel.clone();
            runtime()?.block_on(async move {
                tokio::spawn(async move {
                    shutdown_signal().await;
                    c.cancel();
                });
                voxloop::intent::run(config, cancel).await
            })?;
        }
        Command::Loadtest(args) => {
            // The clients' own logs are noise next to the progress line (the
            // engine warns about checks that arrive before the answer).
            init_tracing(if std::env::var_os("VOXLOOP_LOG").is_some() {
                &config.log
            } else {
                "warn,rtc::peer_connection=error"
            });
            let code = runtime()?.block_on(voxloop::loadtest::main(args))?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::SayText(args) => {
            args.models.apply(&mut config);
            init_tracing(&config.log);
            runtime()?.block_on(speech_cli::say_text(&config, &args.text, &args.out))?;
        }
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// `voxloop say`: exit 0 when spoken (everywhere, for a broadcast), 2 when
/// dropped, 1 on errors or when no outcome came in time.
async fn say(config: &Config, args: SayArgs) -> anyhow::Result<i32> {
    use voxloop::bus::Target;
    use voxloop::prompt::Prompt;
    if let Some(id) = &args.session
        && !voxloop::bus::valid_session_id(id)
    {
        anyhow::bail!("--session {id:?} is not a session id (8 to 64 letters, digits, '-' or '_')");
    }
    let mut prompt = Prompt::new(args.text);
    if let Some(id) = args.id {
        prompt.id = id;
    }
    prompt.priority = args.priority;
    prompt.expires_at = args.expires_in.map(voxloop::bus::say::expires_in);
    prompt.dedupe_key = args.dedupe_key;
    prompt.interrupt = args.interrupt;
    let target = match args.session {
        Some(id) => Target::Session(id),
        None => Target::Broadcast,
    };
    let opts = voxloop::bus::say::SayOptions {
        url: config.nats_url.clone(),
        bus: config.bus.clone(),
        target,
        prompt,
        wait: (!args.timeout.is_zero()).then_some(args.timeout),
        settle: std::time::Duration::from_secs(3),
    };
    let outcomes = voxloop::bus::say::say(&opts, |o| println!("{o}")).await?;
    if opts.wait.is_none() {
        return Ok(0);
    }
    if outcomes.is_empty() {
        println!("timeout: no outcome within {:?}", args.timeout);
        return Ok(1);
    }
    Ok(if outcomes.iter().all(|o| o.spoken) {
        0
    } else {
        2
    })
}

/// Resolves on the first SIGTERM/Ctrl-C (the caller drains); a second
/// signal exits at once with 130.
async fn drain_signal() {
    shutdown_signal().await;
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("second signal: exiting without waiting for the drain");
        std::process::exit(130);
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
