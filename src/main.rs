//! The `voxloop` command line: the binary edge, where errors become `anyhow`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use voxloop::config::{Config, PipelineKind};

/// Crates whose per-packet debug output would drown everything else.
const QUIET: &str = "webrtc=warn,rtc=warn,rtc_ice=warn,rtc_dtls=warn,rtc_sctp=warn,rtc_srtp=warn,rtc_interceptor=warn,rtc_datachannel=warn,rtc_mdns=warn";

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
            config.validate()?;
            init_tracing(&config.log);
            eprintln!("# effective configuration\n{}", config.redacted_toml());
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(voxloop::server::serve(config, shutdown_signal()))
                .context("server failed")?;
        }
    }
    Ok(())
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
