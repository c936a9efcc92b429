//! `repair-cli`: the operator's view of a city's storage. Argument parsing, logging, and
//! calls into `rpc::CityClient` and the `audit` crate; the checks themselves live in the library.
//!
//! Exit codes: 0 success; 1 error (unreachable city, bad answer, failed verification);
//! 2 usage error (clap's own); 3 tx not found; 4 the audit found missing, corrupt or
//! unproven shards; 5 the tx is not Federated yet (`verify`).

use anyhow::Context;
use audit::{AuditReport, GrpcProbe, HolderProbe, audit_stripes, check_repaired};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use dag_core::TxId;
use indicatif::{ProgressBar, ProgressStyle};
use rpc::CityClient;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const EXIT_ERROR: u8 = 1;
// 2 is clap's usage error: no outcome of ours uses it.
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_AUDIT_FAILED: u8 = 4;
const EXIT_NOT_FEDERATED: u8 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "repair-cli",
    version,
    about = "Get, repair and audit txs held by a City Chain city node",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage error, 3 tx not found, 4 audit found problems, 5 not Federated yet."
)]
struct Cli {
    /// The city node's gRPC address (host:port or http://host:port).
    #[arg(
        long,
        env = "CITY_ADDR",
        default_value = "127.0.0.1:7700",
        global = true
    )]
    city: String,
    /// Deadline for each call to the city (get, repair, list) and to a light node (audit),
    /// e.g. `10s`, `500ms`, `1m`.
    #[arg(
        long,
        env = "REPAIR_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    timeout: Duration,
    /// The same deadline in milliseconds (older spelling; overrides --timeout).
    #[arg(long, env = "REPAIR_TIMEOUT_MS", global = true, hide = true)]
    timeout_ms: Option<u64>,
    /// Log format on stderr.
    #[arg(long, env = "REPAIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Restore a tx from its shards on light nodes, verify its signature and every
    /// holder's receipt locally, and print it with its holders.
    Get {
        /// The tx id (64 hex characters).
        tx_id: String,
    },
    /// Re-create now every shard of the tx's stripe whose holder is gone or silent, then
    /// restore and verify the tx as `get` does.
    Repair {
        /// The tx id (64 hex characters).
        tx_id: String,
    },
    /// Fetch every shard of every stripe from its holder, check it against the manifest
    /// hash, challenge the holder with a fresh nonce, and print a summary table.
    Audit {
        /// Holders audited at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Fetch a Federated tx's proof from the city and verify it locally against the
    /// genesis file: the batch carrying it, its checkpoint, the committee's quorum
    /// certificate, the continent's Merkle path and signature (and the global anchor when
    /// present). Exit 4 when the tx is not Federated yet.
    Verify {
        /// The tx id (64 hex characters).
        tx_id: String,
        /// The genesis file naming the committee, the continent and the global.
        #[arg(long, env = "CITY_GENESIS")]
        genesis: std::path::PathBuf,
        /// Also write the proof's canonical bytes to this file.
        #[arg(long)]
        save: Option<std::path::PathBuf>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    if let Cmd::Completions { shell } = cli.cmd {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "repair-cli",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let timeout = cli.timeout_ms.map_or(cli.timeout, Duration::from_millis);
    let client = tokio::time::timeout(timeout, CityClient::connect(&cli.city))
        .await
        .with_context(|| format!("city node {} did not answer within {timeout:?}", cli.city))?
        .with_context(|| format!("cannot reach the city node at {}", cli.city))?;
    match cli.cmd {
        Cmd::Get { tx_id } => get(&client, &tx_id, false, timeout).await,
        Cmd::Repair { tx_id } => get(&client, &tx_id, true, timeout).await,
        Cmd::Audit { concurrency } => audit(&client, concurrency, timeout).await,
        Cmd::Verify {
            tx_id,
            genesis,
            save,
        } => verify(&client, &tx_id, &genesis, save.as_deref(), timeout).await,
        Cmd::Completions { .. } => Ok(0),
    }
}

async fn verify(
    client: &CityClient,
    tx_id: &str,
    genesis: &std::path::Path,
    save: Option<&std::path::Path>,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let id = TxId::from_hex(tx_id).with_context(|| format!("{tx_id:?} is not a tx id"))?;
    let genesis = genesis::Genesis::load(genesis)?;
    let rec = tokio::time::timeout(timeout, client.get(id))
        .await
        .with_context(|| format!("GetTx {id}: no answer within {timeout:?}"))?
        .with_context(|| format!("GetTx {id} failed"))?;
    let Some(rec) = rec else {
        eprintln!("tx {id} is not known to this city");
        return Ok(EXIT_NOT_FOUND);
    };
    let Some(proof) = rec.proof else {
        eprintln!(
            "tx {id} is {:?}, not Federated yet: no proof to verify",
            rec.state
        );
        return Ok(EXIT_NOT_FEDERATED);
    };
    if let Some(path) = save {
        std::fs::write(path, &proof).with_context(|| format!("writing {}", path.display()))?;
    }
    let v = audit::verify_tx_proof(&proof, id, &genesis)
        .with_context(|| format!("the proof of tx {id} does not verify"))?;
    println!("tx        {id}");
    println!(
        "city      {} (quorum certificate verified against genesis)",
        v.city_id
    );
    println!(
        "ordered   checkpoint {} (leader round {})",
        v.ordering.sequence, v.ordering.leader_round
    );
    println!(
        "federated continent log leaf {} of {} (path and signature verified)",
        v.ordering.log_index, v.ordering.tree_size
    );
    println!(
        "global    {}",
        if v.global_verified {
            "anchor verified"
        } else {
            "no anchor in the proof"
        }
    );
    Ok(0)
}

async fn get(
    client: &CityClient,
    tx_id: &str,
    rebuild: bool,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let id = TxId::from_hex(tx_id).with_context(|| format!("{tx_id:?} is not a tx id"))?;
    let what = if rebuild { "repair" } else { "restore" };
    let answer = tokio::time::timeout(timeout, client.repair(id, rebuild))
        .await
        .with_context(|| format!("{what} of tx {id}: no answer within {timeout:?}"))?
        .with_context(|| format!("{what} of tx {id} failed"))?;
    let Some(repaired) = answer else {
        eprintln!("tx {id} is not held by this city");
        return Ok(EXIT_NOT_FOUND);
    };
    let rebuilt = repaired.shards_rebuilt;
    let checked = check_repaired(id, repaired, &pqc::MlDsa87)
        .with_context(|| format!("tx {id} came back but does not verify"))?;
    print!("{}", checked.describe());
    if rebuild {
        if rebuilt == 0 {
            println!("repair    stripe was whole: no shard needed rebuilding");
        } else {
            println!("repair    {rebuilt} shard(s) re-created and placed on live light nodes");
        }
    }
    Ok(0)
}

async fn audit(client: &CityClient, concurrency: usize, timeout: Duration) -> anyhow::Result<u8> {
    let stripes = tokio::time::timeout(timeout, client.list_stripes())
        .await
        .with_context(|| format!("listing stripes: no answer within {timeout:?}"))?
        .context("listing stripes failed")?;
    let total: u64 = stripes.iter().map(|s| s.holders.len() as u64).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} auditing [{bar:30}] {pos}/{len} shards {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let probe: Arc<dyn HolderProbe> = Arc::new(GrpcProbe::new(timeout));
    let report: AuditReport = audit_stripes(probe, &stripes, concurrency, |a| {
        bar.inc(1);
        bar.set_message(a.stripe_id.short());
    })
    .await;
    bar.finish_and_clear();
    for p in report.problems() {
        println!("FAIL {}", p.describe());
    }
    print!("{}", report.table());
    print!("{}", report.usage_table());
    if report.colocated_stripes > 0 {
        println!(
            "WARN {} stripe(s) hold two or more shards on one node: Held promises n distinct holders; `repair` spreads them",
            report.colocated_stripes
        );
    }
    if report.one_loss_from_unrecoverable > 0 {
        println!(
            "WARN {} stripe(s) are one node loss away from unrecoverable (exactly k healthy holders)",
            report.one_loss_from_unrecoverable
        );
    }
    if report.is_clean() {
        println!("audit ok: every shard of every stripe is held and proven");
        Ok(0)
    } else {
        println!("audit FAILED: see the lines above");
        Ok(EXIT_AUDIT_FAILED)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exit_codes_do_not_collide_with_clap_usage_errors() {
        let e = Cli::try_parse_from(["repair-cli", "get"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        for code in [
            EXIT_ERROR,
            EXIT_NOT_FOUND,
            EXIT_AUDIT_FAILED,
            EXIT_NOT_FEDERATED,
        ] {
            assert_ne!(i32::from(code), e.exit_code());
        }
    }

    #[test]
    fn timeouts_are_readable_and_flags_follow_the_subcommand() {
        let cli = Cli::try_parse_from(["repair-cli", "audit", "--timeout", "1m", "--city", "h:1"])
            .unwrap();
        assert_eq!(cli.timeout, Duration::from_secs(60));
        assert_eq!(cli.city, "h:1");
        let cli = Cli::try_parse_from(["repair-cli", "--timeout-ms", "250", "audit"]).unwrap();
        assert_eq!(cli.timeout_ms, Some(250));
        assert!(Cli::try_parse_from(["repair-cli", "audit", "--timeout", "soon"]).is_err());
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("usage error"), "{help}");
        assert!(Cli::try_parse_from(["repair-cli", "--log-format", "yaml", "audit"]).is_err());
    }
}
