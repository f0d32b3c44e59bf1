//! `voxloop worker` (serve inference over NATS) and `voxloop workers`
//! (list the live ones): a module of the binary.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use voxloop::bus::Bus;
use voxloop::config::Config;
use voxloop::metrics::Metrics;
use voxloop::remote::{self, Role, worker::RoleEngines};

#[derive(Args)]
pub struct WorkerArgs {
    /// Engines to load and serve: any of asr,llm,tts,embed.
    #[arg(long, default_value = "asr,llm,tts,embed")]
    roles: String,
    /// NATS server URL (VOXLOOP_NATS_URL).
    #[arg(long)]
    nats_url: Option<String>,
    /// Model profile (VOXLOOP_MODELS_PROFILE).
    #[arg(long)]
    profile: Option<String>,
    /// Models directory (VOXLOOP_MODELS_DIR).
    #[arg(long)]
    models_dir: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct WorkersArgs {
    /// NATS server URL (VOXLOOP_NATS_URL).
    #[arg(long)]
    nats_url: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    if config.nats_url.trim().is_empty() {
        anyhow::bail!("no NATS: set --nats-url or VOXLOOP_NATS_URL");
    }
    let bus = Bus::connect(&config.nats_url, &config.bus, Arc::new(Metrics::default())).await?;
    bus.client()
        .cloned()
        .context("NATS connection not available")
}

/// Load the roles' engines and serve them until `shutdown`, then drain.
pub async fn worker(
    mut config: Config,
    args: WorkerArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(v) = args.nats_url {
        config.nats_url = v;
    }
    if let Some(p) = args.profile {
        config.models.profile = p;
    }
    if let Some(d) = args.models_dir {
        config.models.dir = d;
    }
    let roles: Vec<Role> = remote::parse_roles(&args.roles).map_err(anyhow::Error::msg)?;
    let client = connect(&config).await?;
    let cfg = config.clone();
    let engines = tokio::task::spawn_blocking(move || RoleEngines::load(&cfg, &roles))
        .await?
        .context("loading the worker's engines")?;
    remote::worker::run(client, &config, engines, shutdown).await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Print the live workers, their roles and load.
pub async fn workers(mut config: Config, args: WorkersArgs) -> anyhow::Result<i32> {
    if let Some(v) = args.nats_url {
        config.nats_url = v;
    }
    let client = connect(&config).await?;
    // The connection is made in the background: give it a moment.
    for _ in 0..40 {
        if client.connection_state() == async_nats::connection::State::Connected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = remote::directory::collect(&client)
        .await
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&seen)?);
        return Ok(0);
    }
    println!("workers: {}", seen.len());
    for w in &seen {
        let roles: Vec<&str> = w.roles.iter().map(|r| r.as_str()).collect();
        println!("worker {} roles={}", w.id, roles.join(","));
        for e in &w.endpoints {
            let n = |k: &str| e.load.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            println!(
                "  {:<10} requests={} refused={} in_flight={}/{} completed={} failed={} pace_ms={} wait_ms={} avg_accept_ms={:.2}",
                e.name,
                e.requests,
                e.refused,
                n("in_flight"),
                n("limit"),
                n("completed"),
                n("failed"),
                n("pace_ms"),
                n("expected_wait_ms"),
                e.average_ms
            );
        }
    }
    Ok(if seen.is_empty() { 1 } else { 0 })
}
