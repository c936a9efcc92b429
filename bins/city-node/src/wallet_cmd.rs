//! `city-node wallet …`: argument parsing for the wallet client (the `wallet` crate does
//! the work).

use anyhow::Context;
use clap::Subcommand;
use dag_core::AccountId;
use std::path::PathBuf;
use std::time::Duration;

/// Wallet commands.
#[derive(Subcommand, Debug)]
pub(crate) enum WalletCmd {
    /// Create a wallet key file (mode 0600) and print its account id.
    New {
        /// Where to write the key.
        #[arg(long, default_value = "./wallet.key")]
        key: PathBuf,
        /// Overwrite an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Balance and nonce of an account (yours with --key, or any with --account).
    Balance {
        /// A city representative's gRPC address.
        #[arg(long, env = "CITY_NODE")]
        node: String,
        /// Your key file.
        #[arg(long, conflicts_with = "account")]
        key: Option<PathBuf>,
        /// An account id (hex).
        #[arg(long)]
        account: Option<String>,
    },
    /// Sign a transfer, submit it and wait until it is Completed (same city: executed
    /// Applied and federated; to another city: credited there and settled here, with both
    /// certified proofs). A failed outcome or a refund exits non-zero.
    Send {
        /// A city representative's gRPC address.
        #[arg(long, env = "CITY_NODE")]
        node: String,
        /// Your key file.
        #[arg(long, default_value = "./wallet.key")]
        key: PathBuf,
        /// Receiver account id (hex).
        #[arg(long)]
        to: String,
        /// Amount in the smallest unit.
        #[arg(long)]
        amount: u64,
        /// Nonce (default: the account's next nonce as the node reports it).
        #[arg(long)]
        nonce: Option<u64>,
        /// The city you are in.
        #[arg(long, default_value = "JP-13")]
        city: String,
        /// The receiver's city, when it is another city (a cross-city transfer).
        #[arg(long)]
        to_city: Option<String>,
        /// Your latitude.
        #[arg(long, default_value_t = 35.6895)]
        lat: f64,
        /// Your longitude.
        #[arg(long, default_value_t = 139.6917)]
        lon: f64,
        /// Longest wait for Completed, in seconds (a cross-city transfer expires in the
        /// receiver's city 120 s after it was escrowed, so give it more than that).
        #[arg(long, default_value_t = 180)]
        wait_secs: u64,
    },
}

fn account(hex: &str) -> anyhow::Result<AccountId> {
    AccountId::from_hex(hex.trim()).with_context(|| format!("account id {hex:?}"))
}

pub(crate) async fn run(cmd: WalletCmd) -> anyhow::Result<()> {
    match cmd {
        WalletCmd::New { key, force } => {
            let a = wallet::new_key(&key, force)?;
            println!("account: {a}\nkey file: {} (mode 0600)", key.display());
        }
        WalletCmd::Balance {
            node,
            key,
            account: acc,
        } => {
            let id = match (key, acc) {
                (Some(k), _) => wallet::load_key(&k)?.account_id(),
                (None, Some(a)) => account(&a)?,
                (None, None) => anyhow::bail!("pass --key FILE or --account HEX"),
            };
            let a = wallet::balance(&node, id).await?;
            println!(
                "account: {}\nbalance: {}\nnonce: {}\nexists: {}\nas of checkpoint: {}",
                a.account, a.balance, a.nonce, a.exists, a.executed_checkpoints
            );
        }
        WalletCmd::Send {
            node,
            key,
            to,
            amount,
            nonce,
            city,
            to_city,
            lat,
            lon,
            wait_secs,
        } => {
            let kp = wallet::load_key(&key)?;
            let t = wallet::Transfer {
                to: account(&to)?,
                amount,
                nonce,
                city,
                to_city,
                lat,
                lon,
                wait: Duration::from_secs(wait_secs),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let s = wallet::send(&node, &kp, &t, now).await?;
            println!(
                "tx: {}\nnonce: {}\nexecuted in checkpoint: {}\noutcome: {:?}\nstate: {:?}",
                s.tx, s.nonce, s.execution.sequence, s.execution.outcome, s.state
            );
            if let Some(c) = &s.cross {
                println!(
                    "cross-city: {} -> {} {:?}, statement {}, proofs {} + {} bytes",
                    c.from_city,
                    c.to_city,
                    c.state,
                    c.statement.to_hex(),
                    c.transfer_out_proof.as_ref().map_or(0, Vec::len),
                    c.answer_proof.as_ref().map_or(0, Vec::len)
                );
            }
        }
    }
    Ok(())
}
