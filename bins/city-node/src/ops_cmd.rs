//! `city-node nodes` (who presence says is online, like `consul members`) and
//! `city-node status` (one node's own account of itself).

use crate::RoleArg;
use anyhow::Context;
use presence::{ListFilter, PresenceClient, PresenceClientConfig, PresenceStore};
use std::time::Duration;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// One JSON document.
    Json,
}

/// `city-node nodes`.
#[derive(clap::Args, Debug)]
pub(crate) struct NodesArgs {
    /// The presence server.
    #[arg(
        long,
        env = "PRESENCE_HTTP_ENDPOINT",
        default_value = "http://127.0.0.1:7780"
    )]
    presence: String,
    /// Only nodes of this city.
    #[arg(long)]
    city_id: Option<String>,
    /// Only nodes of this role.
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// `city-node status`.
#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    /// The node's gRPC address (a city node).
    #[arg(long, env = "CITY_ADDR", default_value = "127.0.0.1:7700")]
    node: String,
    /// Deadline of the call, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Lists the nodes presence holds online.
pub(crate) async fn nodes(args: NodesArgs) -> anyhow::Result<()> {
    let client = PresenceClient::new(&args.presence, PresenceClientConfig::default())
        .with_context(|| format!("presence at {}", args.presence))?;
    let filter = ListFilter {
        role: args.role.map(RoleArg::role),
        city: args.city_id,
    };
    let mut nodes = client
        .list(&filter)
        .await
        .with_context(|| format!("listing nodes at {}", args.presence))?;
    nodes.sort_by(|a, b| {
        (&a.city_id, a.role, &a.grpc_addr).cmp(&(&b.city_id, b.role, &b.grpc_addr))
    });
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&nodes)?),
        Format::Table => {
            println!(
                "{:<18} {:<9} {:<8} {:<8} {:<24} {:>10} {:>5}  version",
                "node", "role", "city", "zone", "address", "free", "load"
            );
            for n in &nodes {
                println!(
                    "{:<18} {:<9} {:<8} {:<8} {:<24} {:>10} {:>5.2}  {}",
                    format!("{}…", &n.node_id.to_string()[..16]),
                    n.role.as_str(),
                    n.city_id,
                    n.zone,
                    n.grpc_addr,
                    bytesize::ByteSize(n.free_capacity).to_string(),
                    n.load,
                    n.version
                );
            }
            println!("{} node(s) online", nodes.len());
        }
    }
    Ok(())
}

/// Prints a node's status.
pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let s = tokio::time::timeout(args.timeout, async {
        let c = rpc::CityClient::connect(&args.node).await?;
        c.status().await
    })
    .await
    .with_context(|| format!("{} did not answer within {:?}", args.node, args.timeout))?
    .with_context(|| format!("status of {}", args.node))?;
    match args.format {
        Format::Json => {
            let counters: serde_json::Map<String, serde_json::Value> = s
                .counters
                .iter()
                .map(|(k, v)| (k.clone(), (*v).into()))
                .collect();
            let doc = serde_json::json!({
                "node_id": s.node_id.to_string(),
                "role": s.role,
                "version": s.version,
                "uptime_ms": s.uptime_ms,
                "stored_txs": s.stored_txs,
                "counters": counters,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Table => {
            println!("node      {}", s.node_id);
            println!("role      {}", s.role);
            println!("version   {}", s.version);
            println!(
                "uptime    {}",
                humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000))
            );
            println!("stored    {} txs", s.stored_txs);
            for (k, v) in &s.counters {
                println!("  {k:<28} {v}");
            }
        }
    }
    Ok(())
}
