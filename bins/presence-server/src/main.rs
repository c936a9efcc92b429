//! `presence-server`: parses flags, environment and an optional sectioned TOML file
//! (`config`: `[presence]`, `[log]`) into a [`presence::ServerConfig`], sets up logging, and
//! serves the presence API until Ctrl-C (or SIGTERM). `presence-server bench` runs the
//! bounded loopback load run.

mod config;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use presence::{BackendKind, ServerConfig};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Presence server of City Chain: who is online (login / heartbeat / logout / list / events).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the presence API (the default).
    Serve,
    /// Loopback load run: redis-server + presence server, heartbeats/s vs redis-benchmark
    /// SET/s, and the failure-detection time. Bounded in time (about duration + TTL).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
/// Serve settings; accepted before or after the `serve` subcommand.
struct ServeArgs {
    /// TOML file with `[presence]` (ServerConfig keys) and `[log]` sections (the older flat
    /// form is read too); environment, `--set` and flags override it.
    #[arg(long, env = "PRESENCE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Any key as `section.key=value` (repeatable), e.g. `--set presence.ttl_ms=8000`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", global = true)]
    set: Vec<String>,
    /// Store backend (memory keeps presence in this process only: for tests and demos).
    #[arg(long, env = "PRESENCE_BACKEND", global = true,
          value_parser = clap::builder::PossibleValuesParser::new(["redis", "memory"])
              .try_map(|s| s.parse::<BackendKind>()))]
    backend: Option<BackendKind>,
    /// Redis URI, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "PRESENCE_REDIS_URI", global = true)]
    redis_uri: Option<String>,
    /// CA (PEM file) of the Redis servers' certificates, for rediss:// URIs.
    #[arg(long, env = "PRESENCE_REDIS_TLS_CA", global = true)]
    redis_tls_ca: Option<PathBuf>,
    /// HTTP port (default 8080).
    #[arg(long, env = "PRESENCE_HTTP_PORT", global = true)]
    port: Option<u16>,
    /// Address to bind (default 0.0.0.0).
    #[arg(long, env = "PRESENCE_BIND", global = true)]
    bind: Option<IpAddr>,
    /// Online TTL in ms (default 6000).
    #[arg(long, env = "PRESENCE_TTL_MS", global = true)]
    ttl_ms: Option<u64>,
    /// Sweep interval in ms (default 1000).
    #[arg(long, env = "PRESENCE_SWEEP_MS", global = true)]
    sweep_interval_ms: Option<u64>,
    /// Key the per-IP rate limit on X-Forwarded-For (only behind a trusted proxy).
    #[arg(long, env = "PRESENCE_TRUST_FORWARDED_FOR", global = true)]
    trust_forwarded_for: bool,
    /// Log format (default: `[log] format`, else text).
    #[arg(long, env = "PRESENCE_LOG_FORMAT", global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

use presence::redact_uri;

#[derive(Debug, Args)]
struct BenchArgs {
    /// Seconds of heartbeat load.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Logged-in nodes the heartbeats are spread over.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Requests of the redis-benchmark baseline.
    #[arg(long, default_value_t = 100_000)]
    redis_requests: u64,
    /// Load generator: wrk or tokio (default: wrk when installed).
    #[arg(long, value_parser = ["wrk", "tokio"])]
    client: Option<String>,
}

/// The effective configuration: defaults ← file ← `PRESENCE_SERVER__*` ← `--set` ← named
/// flags (and their `PRESENCE_*` variables).
fn resolve(args: &ServeArgs) -> anyhow::Result<config::FileConfig> {
    resolve_with(args, std::env::vars())
}

fn resolve_with(
    args: &ServeArgs,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<config::FileConfig> {
    let mut layers = Vec::new();
    if let Some(path) = &args.config {
        layers.push(config::file_layer(path)?);
    }
    layers.push(config::env_layer(vars));
    layers.push(config::set_layer(&args.set)?);
    let mut file = config::build(&layers)?;
    file.presence = apply_flags(args, file.presence);
    match args.log_format.as_deref() {
        Some("json") => file.log.format = config::LogFormat::Json,
        Some(_) => file.log.format = config::LogFormat::Text,
        None => {}
    }
    Ok(file)
}

#[cfg(test)]
fn server_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    Ok(resolve_with(args, [])?.presence)
}

fn apply_flags(args: &ServeArgs, mut c: ServerConfig) -> ServerConfig {
    if let Some(v) = args.backend {
        c.backend = v;
    }
    if let Some(v) = &args.redis_uri {
        c.redis_uri = v.clone();
    }
    if let Some(v) = &args.redis_tls_ca {
        c.redis_tls_ca = Some(v.clone());
    }
    if let Some(v) = args.port {
        c.http_port = v;
    }
    if let Some(v) = args.bind {
        c.bind = v;
    }
    if let Some(v) = args.ttl_ms {
        c.ttl_ms = v;
    }
    if let Some(v) = args.sweep_interval_ms {
        c.sweep_interval_ms = v;
    }
    if args.trust_forwarded_for {
        c.trust_forwarded_for = true;
    }
    c
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = resolve(&cli.serve)?;
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    if file.log.format == config::LogFormat::Json {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli.command {
        Some(Command::Bench(b)) => {
            let report = presence::load::run(presence::load::LoadConfig {
                duration: Duration::from_secs(b.duration_secs.clamp(1, 60)),
                concurrency: b.concurrency,
                nodes: b.nodes,
                redis_bench_requests: b.redis_requests,
                client: match b.client.as_deref() {
                    Some("tokio") => presence::load::LoadClient::Tokio,
                    Some(_) => presence::load::LoadClient::Wrk,
                    None => presence::load::LoadClient::detect(),
                },
                ..presence::load::LoadConfig::default()
            })
            .await?;
            println!("{report}");
        }
        Some(Command::Serve) | None => {
            let config = file.presence;
            // Not `?config`: the Redis URI may carry a password.
            tracing::info!(
                backend = ?config.backend,
                redis_uri = %redact_uri(&config.redis_uri),
                bind = %config.bind,
                port = config.http_port,
                ttl_ms = config.ttl_ms,
                "starting presence server"
            );
            if config.backend == BackendKind::Memory {
                tracing::warn!(
                    "presence is IN MEMORY: lost on restart and not shared with another presence server; use --backend redis in production"
                );
            }
            let server = presence::PresenceServer::start(config).await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            server.shutdown().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_toml_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("presence-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(
            &file,
            "backend = \"redis\"\nhttp_port = 9000\nttl_ms = 8000\n[rate_limit]\nburst = 10\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "presence-server",
            "--config",
            file.to_str().unwrap(),
            "--port",
            "9100",
        ]);
        let c = server_config(&cli.serve).unwrap();
        assert_eq!(c.backend, BackendKind::Redis);
        assert_eq!(c.http_port, 9100);
        assert_eq!(c.ttl_ms, 8000);
        assert_eq!(c.rate_limit.burst, 10);
        assert_eq!(c.rate_limit.per_second, 30);
        assert_eq!(c.heartbeat_ms, 3000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serve_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "presence-server",
            "serve",
            "--port",
            "8081",
            "--backend",
            "memory",
        ])
        .expect("flags after `serve` parse");
        assert!(matches!(cli.command, Some(Command::Serve)));
        let c = server_config(&cli.serve).unwrap();
        assert_eq!(c.http_port, 8081);
        assert_eq!(c.backend, BackendKind::Memory);
    }

    #[test]
    fn backend_choices_are_listed_and_uris_redacted() {
        let e = Cli::try_parse_from(["presence-server", "--backend", "etcd"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("redis") && msg.contains("memory"), "{msg}");
        assert_eq!(
            redact_uri("redis://u:hunter2@10.0.0.1:6379"),
            "redis://u:***@10.0.0.1:6379"
        );
        assert_eq!(redact_uri("redis://10.0.0.1:6379"), "redis://10.0.0.1:6379");
    }

    #[test]
    fn unknown_toml_keys_are_rejected() {
        let e = toml::from_str::<ServerConfig>("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"));
    }
}
