//! Ledger execution benchmarks: the parallel executor by object sets against sequential
//! execution of the same committed sequence (the baseline, measured in the same run) at 0 %,
//! 10 % and 50 % conflicting transfers, and a whole checkpoint applied by the persisted
//! ledger (snapshot read, execution, one redb commit) — the execution cost per tx.
//!
//! Conflicts: a transfer "conflicts" when it touches one of four hot accounts that other
//! transfers of the checkpoint touch too; the others use accounts of their own.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dag_core::consensus::{TestSigner, TestVerifier};
use dag_core::{AccountId, CityId, Position, PositionMethod, SignedTx, Signer, Tx, TxId};
use ledger::{
    Account, Ledger, LedgerConfig, Snapshot, Transfer, execute_parallel, execute_sequential,
};
use std::collections::BTreeMap;
use std::hint::black_box;

const TXS: usize = 4_096;
const HOT: u64 = 4;

fn acct(i: u64) -> AccountId {
    AccountId::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

/// `TXS` transfers; every `1 / pct`-th one goes between hot accounts.
fn workload(conflict_pct: u64) -> (Snapshot, Vec<Transfer>) {
    let mut snap = Snapshot::default();
    let mut txs = Vec::with_capacity(TXS);
    for i in 0..TXS as u64 {
        let hot = conflict_pct > 0 && (i * conflict_pct) % 100 < conflict_pct;
        let (s, r) = if hot {
            (acct(i % HOT), acct((i + 1) % HOT))
        } else {
            (acct(1_000 + 2 * i), acct(1_001 + 2 * i))
        };
        snap.accounts.insert(
            s,
            Account {
                balance: 1_000_000,
                ..Account::default()
            },
        );
        txs.push(Transfer {
            id: TxId::from_bytes(*blake3::hash(&(i | 1 << 63).to_le_bytes()).as_bytes()),
            sender: s,
            receiver: r,
            amount: 1 + i % 7,
            nonce: i,
            read_set: Vec::new(),
            write_set: Vec::new(),
        });
    }
    (snap, txs)
}

fn executor(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .expect("pool");
    let mut g = c.benchmark_group("execution");
    g.throughput(Throughput::Elements(TXS as u64));
    for pct in [0u64, 10, 50] {
        let (snap, txs) = workload(pct);
        assert_eq!(
            execute_parallel(&pool, &snap, &txs),
            execute_sequential(&snap, &txs)
        );
        let p = format!("conflicts={pct}%,txs={TXS}");
        g.bench_with_input(BenchmarkId::new("sequential", &p), &txs, |b, txs| {
            b.iter(|| black_box(execute_sequential(&snap, txs)))
        });
        g.bench_with_input(
            BenchmarkId::new(format!("parallel/threads={cores}"), &p),
            &txs,
            |b, txs| b.iter(|| black_box(execute_parallel(&pool, &snap, txs))),
        );
    }
    g.finish();
}

fn signed(from: &TestSigner, to: AccountId, nonce: u64) -> dag_core::VerifiedTx {
    let tx = Tx::fresh(
        AccountId::from_public_key(from.public_key()),
        to,
        1,
        nonce,
        1_767_225_600_000,
        CityId::new("JP-13").expect("city"),
        Position::from_degrees(35.6895, 139.6917).expect("position"),
        PositionMethod::Gps,
    );
    let id = tx.id();
    let signature = from.sign(&Tx::signing_message(&id));
    SignedTx {
        tx,
        public_key: from.public_key().to_vec(),
        signature,
    }
    .verify(&TestVerifier)
    .expect("verifies")
}

fn ledger_apply(c: &mut Criterion) {
    const N: usize = 1_000;
    let users: Vec<TestSigner> = (0..N as u64).map(TestSigner::new).collect();
    let alloc: BTreeMap<AccountId, u64> = users
        .iter()
        .map(|u| (AccountId::from_public_key(u.public_key()), 1_000_000))
        .collect();
    let mut g = c.benchmark_group("execution");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let l =
        Ledger::open(&dir.path().join("l.redb"), &alloc, LedgerConfig::default()).expect("ledger");
    let mut round = 0u64;
    g.bench_function(format!("ledger_apply/txs={N}"), |b| {
        b.iter_batched(
            || {
                round += 1;
                users
                    .iter()
                    .enumerate()
                    .map(|(i, u)| signed(u, acct(i as u64), round))
                    .collect::<Vec<_>>()
            },
            |txs| {
                let seq = l.next_seq();
                black_box(ledger::CommitApplier::apply(&l, seq, seq, &txs).expect("applies"))
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, executor, ledger_apply);
criterion_main!(benches);
