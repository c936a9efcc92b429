//! `city-node stake …`: sign a staking request (a dpos system tx) with a key file and submit
//! it to a representative over gRPC. The request is checked at admission and applied when
//! the city commits it; the answer here is the admission's.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dag_core::{AccountId, CityId};
use dpos::{NodeKind, SystemPayload};
use std::path::PathBuf;

/// Common options of every staking request.
#[derive(Args, Debug)]
pub(crate) struct StakeArgs {
    /// The signing account's ML-DSA-87 key file.
    #[arg(long, env = "CITY_KEY_FILE")]
    key: PathBuf,
    /// A representative's gRPC address (`host:port`).
    #[arg(long, env = "CITY_NODE", default_value = "127.0.0.1:7700")]
    node: String,
    /// The city the request is for.
    #[arg(long, env = "CITY_ID", default_value = "JP-13")]
    city: String,
    /// The account's next nonce, shared with its transfers (`city-node wallet balance` shows it).
    #[arg(long)]
    nonce: u64,
    #[command(subcommand)]
    op: StakeOp,
}

/// One staking operation.
#[derive(Subcommand, Debug)]
pub(crate) enum StakeOp {
    /// Register this key as a node (full = election candidate, light = storage holder).
    Register {
        /// `full` or `light`.
        #[arg(long, default_value = "full")]
        kind: String,
    },
    /// Bond liquid balance to this account's own node (locked for the stake lock).
    Bond {
        /// Base units.
        #[arg(long)]
        amount: u64,
    },
    /// Vote: bond liquid balance to a full-node candidate.
    Delegate {
        /// The candidate's account id (64 hex characters).
        #[arg(long)]
        validator: String,
        /// Base units.
        #[arg(long)]
        amount: u64,
    },
    /// Start unbonding stake whose lock has ended.
    Unbond {
        /// The validator the stake is bonded to (this account for a self-bond).
        #[arg(long)]
        validator: String,
        /// Base units.
        #[arg(long)]
        amount: u64,
    },
    /// Return finished unbondings from a validator to the liquid balance.
    Withdraw {
        /// The validator.
        #[arg(long)]
        validator: String,
    },
    /// Move accrued rewards to the liquid balance.
    Claim,
}

fn account(hex: &str, what: &str) -> anyhow::Result<AccountId> {
    AccountId::from_hex(hex).with_context(|| format!("--{what} must be an account id"))
}

fn payload(op: &StakeOp) -> anyhow::Result<SystemPayload> {
    Ok(match op {
        StakeOp::Register { kind } => SystemPayload::RegisterNode {
            kind: match kind.as_str() {
                "full" => NodeKind::Full,
                "light" => NodeKind::Light,
                other => bail!("--kind must be full or light, not {other:?}"),
            },
            metrics: dpos::Metrics::default(),
        },
        StakeOp::Bond { amount } => SystemPayload::Bond { amount: *amount },
        StakeOp::Delegate { validator, amount } => SystemPayload::Delegate {
            validator: account(validator, "validator")?,
            amount: *amount,
        },
        StakeOp::Unbond { validator, amount } => SystemPayload::Unbond {
            validator: account(validator, "validator")?,
            amount: *amount,
        },
        StakeOp::Withdraw { validator } => SystemPayload::Withdraw {
            validator: account(validator, "validator")?,
        },
        StakeOp::Claim => SystemPayload::ClaimRewards,
    })
}

/// Signs and submits; prints the tx id and the admission's answer.
pub(crate) async fn run(args: StakeArgs) -> anyhow::Result<()> {
    let payload = payload(&args.op)?;
    let key = pqc::Keypair::load(&args.key)
        .with_context(|| format!("loading the key file {}", args.key.display()))?;
    let city = CityId::new(args.city.clone()).context("--city")?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let tx = dpos::sign_system_tx(&payload, args.nonce, now_ms, city, &key);
    let client = rpc::CityClient::connect(&args.node)
        .await
        .with_context(|| format!("connecting to {}", args.node))?;
    let submitted = client
        .submit(&tx)
        .await
        .with_context(|| format!("{} refused by {}", payload.kind_name(), args.node))?;
    println!("account: {}", key.account_id());
    println!("tx: {}", submitted.tx_id);
    println!("state: {:?}", submitted.state);
    Ok(())
}
