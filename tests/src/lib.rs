//! Workspace-level end-to-end tests live in `tests/tests/`. This library holds what they
//! share: finding the workspace's binaries (built on demand, since cargo builds a package's
//! binaries only for that package's own tests).

use std::path::{Path, PathBuf};

/// The workspace binary `name` (`city-node`, `presence-server`, `repair-cli`) from the
/// target directory this test runs from; built with cargo (same profile) when missing.
///
/// # Panics
/// When the binary cannot be built (a test helper: the test cannot run without it).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its executable");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = std::process::Command::new(cargo);
    c.args(["build", "--quiet", "-p", name]);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        c.arg("--release");
    }
    // Always ask cargo: a stale binary from an older build would test old code.
    let status = c.status().expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// A FRESH_TX of `amount` 1 from `from` to the fixed account `[7; 32]` in city JP-13 (Tokyo),
/// placed at `at` (latitude, longitude) by GPS, signed by `from`: the tx the process-level
/// tests submit.
///
/// # Panics
/// When `at` is not a valid position (a test helper: fixed inputs).
pub fn tokyo_tx(from: &pqc::Keypair, nonce: u64, at: (f64, f64)) -> dag_core::SignedTx {
    tokyo_payment(from, 1, nonce, at)
}

/// Like [`tokyo_tx`] with `amount`: a FRESH_TX from `from` to the fixed account `[7; 32]`
/// in JP-13, at `at` by GPS, created at 2026-01-01 + `nonce` ms, signed by `from`.
///
/// # Panics
/// When `at` is not a valid position (a test helper: fixed inputs).
pub fn tokyo_payment(
    from: &pqc::Keypair,
    amount: u64,
    nonce: u64,
    at: (f64, f64),
) -> dag_core::SignedTx {
    use dag_core::{AccountId, CityId, Position, PositionMethod, Tx};
    pqc::sign_tx(
        Tx::fresh(
            from.account_id(),
            AccountId::from_bytes([7; 32]),
            amount,
            nonce,
            1_767_225_600_000 + nonce,
            CityId::new("JP-13").expect("a valid city id"),
            Position::from_degrees(at.0, at.1).expect("a valid position"),
            PositionMethod::Gps,
        ),
        from,
    )
}

/// A point inside `city` for the two-city tests: Tokyo's city hall for `JP-13`, Osaka's
/// for any other city.
///
/// # Panics
/// Never for these fixed coordinates.
pub fn city_hall(city: &str) -> dag_core::Position {
    let (lat, lon) = if city == "JP-13" {
        (35.6895, 139.6917)
    } else {
        (34.6937, 135.5023)
    };
    dag_core::Position::from_degrees(lat, lon).expect("a valid position")
}

/// A FRESH_TX of `amount` from `from` (home city `home`, at [`city_hall`]) to `to`, created
/// at 2026-01-01 + `nonce` ms, signed by `from`; with `to_city` a cross-city transfer (its
/// payload names the receiver's city).
///
/// # Panics
/// When a city id is not valid (a test helper: fixed inputs).
pub fn city_transfer(
    from: &pqc::Keypair,
    home: &str,
    to: dag_core::AccountId,
    to_city: Option<&str>,
    amount: u64,
    nonce: u64,
) -> dag_core::SignedTx {
    use dag_core::{CityId, PositionMethod, Tx};
    let mut tx = Tx::fresh(
        from.account_id(),
        to,
        amount,
        nonce,
        1_767_225_600_000 + nonce,
        CityId::new(home).expect("a valid city id"),
        city_hall(home),
        PositionMethod::Gps,
    );
    if let Some(c) = to_city {
        tx.payload = ledger::to_city_payload(&CityId::new(c).expect("a valid city id"));
    }
    pqc::sign_tx(tx, from)
}

/// How the tests' clients submit again after an `UNAVAILABLE` answer, as a wallet does:
/// 6 attempts, 200 ms doubling, capped at 2 s.
pub const WALLET_RETRY: resilience::RetryPolicy = resilience::RetryPolicy {
    max_attempts: 6,
    base_delay: std::time::Duration::from_millis(200),
    multiplier: 2.0,
    max_delay: std::time::Duration::from_secs(2),
    jitter: resilience::Jitter::Equal,
};

/// `city-node stake` (the binary `bin`, from [`workspace_bin`]) run as an operator runs it:
/// signs with the key file `key`, submits to
/// the representative at `node` (city `city`) with `--nonce nonce`, then `op` (e.g.
/// `["bond", "--amount", "1000000"]`). Blocking (run it on `spawn_blocking` in async
/// tests). Returns the tx id the CLI prints when the request was admitted, or the CLI's
/// output when it failed (e.g. `UNAVAILABLE` while too few light nodes are live).
///
/// # Panics
/// When the binary cannot be started (a test helper).
pub fn stake_cli(
    bin: &Path,
    key: &Path,
    node: &str,
    city: &str,
    nonce: u64,
    op: &[&str],
) -> Result<dag_core::TxId, String> {
    let out = std::process::Command::new(bin)
        .arg("stake")
        .arg("--key")
        .arg(key)
        .args(["--node", node, "--city", city])
        .args(["--nonce", &nonce.to_string()])
        .args(op)
        .output()
        .expect("city-node starts");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = format!("{op:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(text);
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tx: "))
        .and_then(|h| dag_core::TxId::from_hex(h).ok())
        .ok_or(text)
}

/// The hashes of checkpoints `0..upto` as `checkpoint(seq)` returns them (e.g. from a
/// representative's order store), checking that none is missing, each has its sequence and
/// each chains to the one before (`prev_hash`, zero for the first). `who` names the source
/// in the panic message.
///
/// # Panics
/// On a gap, a wrong sequence or a broken chain (a test helper: that is the check).
pub fn checkpoint_chain(
    who: &str,
    upto: u64,
    checkpoint: impl Fn(u64) -> Option<dag_core::consensus::Checkpoint>,
) -> Vec<dag_core::Hash32> {
    let mut prev = dag_core::Hash32::default();
    let mut hashes = Vec::new();
    for seq in 0..upto {
        let cp = checkpoint(seq).unwrap_or_else(|| panic!("{who}: gap at checkpoint {seq}"));
        assert_eq!(cp.sequence, seq, "{who}: checkpoint {seq}");
        assert_eq!(cp.prev_hash, prev, "{who}: checkpoint {seq} does not chain");
        prev = cp.hash();
        hashes.push(prev);
    }
    hashes
}
