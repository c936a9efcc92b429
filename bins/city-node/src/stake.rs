//! `city-node stake …`: sign a staking request (a dpos system tx) with a key file and submit
//! it to a representative over gRPC. The request is checked at admission and applied when
//! the city commits it; the answer here is the admission's. `stake show` and
//! `stake committee` print a representative's stake reads (`GetStake`, `GetCommittee`),
//! for people or, with `--json`, as the gateway's JSON.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dag_core::{AccountId, CityId};
use dpos::{NodeKind, SystemPayload};
use std::path::PathBuf;

/// Common options of every staking request.
#[derive(Args, Debug)]
pub(crate) struct StakeArgs {
    /// The signing account's ML-DSA-87 key file (required to sign; `show` reads its
    /// account).
    #[arg(long, env = "CITY_KEY_FILE", global = true)]
    key: Option<PathBuf>,
    /// A representative's gRPC address (`host:port`).
    #[arg(
        long,
        env = "CITY_NODE",
        default_value = "127.0.0.1:7700",
        global = true
    )]
    node: String,
    /// The city the request is for.
    #[arg(long, env = "CITY_ID", default_value = "JP-13")]
    city: String,
    /// The account's next nonce, shared with its transfers (`city-node wallet balance` shows
    /// it); required to sign.
    #[arg(long)]
    nonce: Option<u64>,
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
    /// Publish where this full node serves consensus (its city gRPC address), so the
    /// committee can reach it once dpos elects it (run it as a standby until then).
    Endpoint {
        /// `host:port` or `http(s)://host:port`.
        #[arg(long)]
        address: String,
    },
    /// Print an account's stake: balance, bonded, delegations, unbonding, rewards, node.
    Show {
        /// The account id (64 hex characters); default: the `--key` file's account.
        #[arg(long)]
        account: Option<String>,
        /// Print the gateway's JSON (`/v1/accounts/{id}/stake`).
        #[arg(long)]
        json: bool,
    },
    /// Print the committee and epoch, the dpos term and the next committee.
    Committee {
        /// Print the gateway's JSON (`/v1/committee`).
        #[arg(long)]
        json: bool,
    },
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
        StakeOp::Endpoint { address } => {
            dpos::validate_endpoint(address).with_context(|| format!("--address {address:?}"))?;
            SystemPayload::SetEndpoint {
                address: address.clone(),
            }
        }
        StakeOp::Show { .. } | StakeOp::Committee { .. } => {
            bail!("reads are not staking requests")
        }
    })
}

/// Signs and submits; prints the tx id and the admission's answer. `show` and `committee`
/// read instead.
pub(crate) async fn run(args: StakeArgs) -> anyhow::Result<()> {
    match &args.op {
        StakeOp::Show { account, json } => return show(&args, account.as_deref(), *json).await,
        StakeOp::Committee { json } => return committee(&args, *json).await,
        _ => {}
    }
    let payload = payload(&args.op)?;
    let Some(key_file) = &args.key else {
        bail!("--key is required to sign a {}", payload.kind_name());
    };
    let Some(nonce) = args.nonce else {
        bail!(
            "--nonce is required to sign a {} (`city-node wallet balance` shows the next one)",
            payload.kind_name()
        );
    };
    let key = pqc::Keypair::load(key_file)
        .with_context(|| format!("loading the key file {}", key_file.display()))?;
    let city = CityId::new(args.city.clone()).context("--city")?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let tx = dpos::sign_system_tx(&payload, nonce, now_ms, city, &key);
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

async fn client(args: &StakeArgs) -> anyhow::Result<rpc::CityClient> {
    rpc::CityClient::connect(&args.node)
        .await
        .with_context(|| format!("connecting to {}", args.node))
}

/// `stake show`: the account of `--account`, else of `--key`.
async fn show(args: &StakeArgs, account_hex: Option<&str>, json: bool) -> anyhow::Result<()> {
    let who = match (account_hex, &args.key) {
        (Some(hex), _) => account(hex, "account")?,
        (None, Some(file)) => pqc::Keypair::load(file)
            .with_context(|| format!("loading the key file {}", file.display()))?
            .account_id(),
        (None, None) => bail!("give --account <id> or --key <file>"),
    };
    let s = client(args)
        .await?
        .stake(who)
        .await
        .with_context(|| format!("GetStake at {}", args.node))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&gateway::stake::StakeAnswer::from(&s))?
        );
    } else {
        print!("{}", render_stake(&s));
    }
    Ok(())
}

/// `stake committee`.
async fn committee(args: &StakeArgs, json: bool) -> anyhow::Result<()> {
    let c = client(args)
        .await?
        .committee()
        .await
        .with_context(|| format!("GetCommittee at {}", args.node))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&gateway::stake::CommitteeAnswer::from(&c))?
        );
    } else {
        print!("{}", render_committee(&c));
    }
    Ok(())
}

/// The human form of a stake read, one fact per line.
fn render_stake(s: &rpc::StakeInfo) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "account: {}", s.account);
    let _ = writeln!(o, "exists: {}", s.exists);
    let _ = writeln!(o, "balance: {}", s.balance);
    let _ = writeln!(o, "bonded: {}", s.bonded);
    for d in &s.delegations {
        let _ = writeln!(
            o,
            "delegation: {} {} ({} lots, first unlock at {} ms)",
            d.validator,
            d.amount,
            d.lots.len(),
            d.lots.first().map_or(0, |l| l.unlock_at_ms)
        );
    }
    for u in &s.unbonding {
        let _ = writeln!(
            o,
            "unbonding: {} {} (withdrawable at {} ms)",
            u.validator, u.amount, u.release_at_ms
        );
    }
    let _ = writeln!(o, "rewards: {}", s.rewards);
    match &s.node {
        Some(n) => {
            let _ = writeln!(
                o,
                "node: {} stake {} suspicion {}{}{}",
                match n.kind {
                    rpc::StakeNodeKind::Full => "full",
                    rpc::StakeNodeKind::Light => "light",
                },
                n.stake,
                n.suspicion,
                if n.active { "" } else { " inactive" },
                if n.representative {
                    " representative"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(o, "node: not registered");
        }
    }
    let _ = writeln!(
        o,
        "dpos: term {}, {} checkpoints applied, root {}",
        s.term,
        s.dpos_applied_upto,
        s.dpos_state_root.to_hex()
    );
    o
}

fn render_members(o: &mut String, members: &[rpc::CommitteeMemberInfo]) {
    use std::fmt::Write as _;
    for m in members {
        let _ = writeln!(
            o,
            "  {} weight {} dpos stake {} {}",
            m.node_id,
            m.weight,
            m.dpos_stake,
            m.address.as_deref().unwrap_or("(no address)")
        );
    }
}

/// The human form of a committee read.
fn render_committee(c: &rpc::CommitteeInfo) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "epoch: {} (from checkpoint {}), {} checkpoints committed{}{}",
        c.epoch,
        c.epoch_first_seq,
        c.committed,
        if c.switching { ", switching" } else { "" },
        if c.removed {
            ", this node was removed"
        } else if c.standby {
            ", this node is a standby (not elected yet)"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "members: {}", c.members.len());
    render_members(&mut o, &c.members);
    match &c.dpos {
        Some(d) => {
            let _ = writeln!(
                o,
                "dpos term: {} (started at {} ms, ends at {} ms)",
                d.term, d.started_at_ms, d.ends_at_ms
            );
            let _ = writeln!(
                o,
                "next: {} ({})",
                d.next.len(),
                if d.next_elected {
                    "elected, not yet running"
                } else {
                    "the election as of now"
                }
            );
            render_members(&mut o, &d.next);
            if !d.next_unreachable.is_empty() {
                let _ = writeln!(
                    o,
                    "  (kept: elected {} without an address)",
                    d.next_unreachable
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let _ = writeln!(
                o,
                "dpos: {} checkpoints applied, root {}",
                d.applied_upto,
                d.state_root.to_hex()
            );
        }
        None => {
            let _ = writeln!(o, "dpos: not started (no checkpoint yet)");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::{Hash32, NodeId};

    #[test]
    fn endpoint_requests_are_checked_before_signing() {
        let ok = payload(&StakeOp::Endpoint {
            address: "10.0.0.7:7700".into(),
        })
        .unwrap();
        assert_eq!(
            ok,
            SystemPayload::SetEndpoint {
                address: "10.0.0.7:7700".into()
            }
        );
        for bad in ["10.0.0.7", "ftp://x:1", ""] {
            assert!(
                payload(&StakeOp::Endpoint {
                    address: bad.into()
                })
                .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_human_forms_name_every_read_fact() {
        let v = AccountId::from_bytes([2; 32]);
        let s = rpc::StakeInfo {
            account: AccountId::from_bytes([1; 32]),
            exists: true,
            balance: 7,
            bonded: 30,
            delegations: vec![rpc::StakeDelegation {
                validator: v,
                amount: 30,
                lots: vec![rpc::StakeLot {
                    amount: 30,
                    unlock_at_ms: 99,
                }],
            }],
            unbonding: vec![rpc::StakeUnbonding {
                validator: v,
                amount: 5,
                release_at_ms: 123,
            }],
            rewards: 4,
            node: None,
            term: 3,
            dpos_applied_upto: 50,
            dpos_state_root: Hash32([0xee; 32]),
        };
        let text = render_stake(&s);
        for line in [
            "balance: 7\n".to_string(),
            "bonded: 30\n".to_string(),
            format!("delegation: {v} 30 (1 lots, first unlock at 99 ms)\n"),
            format!("unbonding: {v} 5 (withdrawable at 123 ms)\n"),
            "rewards: 4\n".to_string(),
            "node: not registered\n".to_string(),
            format!(
                "dpos: term 3, 50 checkpoints applied, root {}\n",
                "ee".repeat(32)
            ),
        ] {
            assert!(text.contains(&line), "{line:?} not in\n{text}");
        }
        let m = rpc::CommitteeMemberInfo {
            node_id: NodeId::from_bytes([3; 32]),
            weight: 2,
            dpos_stake: 2_000_000,
            address: None,
        };
        let c = rpc::CommitteeInfo {
            epoch: 1,
            epoch_first_seq: 34,
            switching: false,
            removed: true,
            standby: false,
            committed: 40,
            members: vec![m.clone()],
            dpos: None,
        };
        let text = render_committee(&c);
        assert!(text.starts_with(
            "epoch: 1 (from checkpoint 34), 40 checkpoints committed, this node was removed\n"
        ));
        assert!(text.contains(&format!(
            "  {} weight 2 dpos stake 2000000 (no address)\n",
            m.node_id
        )));
        assert!(text.contains("dpos: not started"));
    }
}
