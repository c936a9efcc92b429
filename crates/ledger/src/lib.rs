//! # ledger
//!
//! A city's accounts and balances, and the deterministic execution of committed transfers.
//!
//! - **Accounts are objects.** Each account is one object, its [`ObjectId`] the account
//!   id's bytes ([`account_object`]): a balance, a version (incremented on every write) and
//!   the next nonce. Genesis allocates the opening balances; an account that receives a
//!   transfer and did not exist is **created on credit** (balance 0 before it).
//! - **The binding rule** ([`check_sets`]). A FRESH_TX moves `amount` from its sender (the
//!   signer) to its receiver, so it writes exactly those two account objects. Its write set
//!   must name both; the read set is free (execution reads only what it writes). A tx with
//!   *no* sets at all is the implicit form: the ledger derives the write set {sender,
//!   receiver}. Any other declaration that omits a touched account is refused at admission
//!   and, if committed anyway, fails with [`FailReason::SetsDoNotCover`].
//! - **Execution** ([`Ledger::apply_with`], [`CommitApplier`]). Per checkpoint, in commit
//!   order: a transfer whose sets do not cover, whose (sender, nonce) was already applied,
//!   whose sender lacks the amount, or whose receiver would overflow **fails** with that
//!   reason and moves nothing; otherwise it is **applied**. Outcomes never depend on the
//!   machine, so every representative reaches the same root; money is never created or
//!   lost (the tests check the supply). A tx id committed twice executes once.
//! - **Parallel by object sets** ([`execute_parallel`]): transfers are grouped into
//!   components of (transitively) overlapping footprints ([`components`]); components run
//!   side by side on a bounded rayon pool, each in commit order; the effects equal
//!   sequential execution's ([`execute_sequential`], property-tested).
//! - **Durable, idempotent per checkpoint**: one redb write per checkpoint (accounts,
//!   nonces, outcomes, root), so a crash leaves all or nothing; applying an applied
//!   sequence again returns its root and changes nothing.
//! - **Root** ([`ledger_root`]): `H(chain ‖ book root ‖ statements root)` — the running
//!   commitment ([`checkpoint_root`]) chaining, from the genesis allocation's root, every
//!   checkpoint's outcomes and written accounts; the [`CrossBook`]'s root; and the Merkle
//!   root of the cross-city statements the checkpoint emitted, so one statement is proven
//!   under a certified header with a [`StatementProof`].
//! - **Cross-city txs in commit order** ([`Ledger::enable_cross`]): a FRESH_TX whose
//!   payload names another city ([`to_city_payload`]) escrows; a SYSTEM_TX carrying a
//!   [`CrossRelay`] (another city's certified statements) credits once or settles once.
//!   They run after the checkpoint's same-city transfers, before the hook.
//! - **Across cities** ([`CrossBook`]): the sender's city escrows on commit and certifies
//!   a transfer-out; the receiver's city credits exactly once while its agreed time is
//!   before the transfer's deadline, else records it expired; the sender's city settles
//!   once on the receiver city's certified answer (completed, or refunded). Idempotent by
//!   tx id on both sides; certificates checked against the other city
//!   ([`CityCertificates`]).
//! - **Balances for other state machines** ([`Balances`]): `balance`, `credit`, `debit`
//!   with checked arithmetic inside one checkpoint's apply, for DPoS liquid balances.

mod cross;
mod error;
mod exec;
mod relay;
mod store;
mod transfer;

pub use cross::{
    Answer, CertError, Certified, CityCertificates, CrossBook, CrossError, CrossTransfer, Funds,
    OutState, SendOutcome, Settled, Verdict,
};
pub use dag_core::ObjectId;
pub use dag_core::execution::CommitApplier;
pub use error::{Error, Result};
pub use exec::{Effects, Snapshot, components, execute_parallel, execute_sequential};
pub use relay::{
    CheckpointCertificates, CrossProofError, CrossRelay, RELAY_TAG, RelayItem, StatementProof,
    TO_CITY_TAG, cross_proof, destination, is_relay, ledger_root, statements_root, to_city_payload,
    verify_cross_proof,
};
pub use store::{
    Balances, CheckpointStatements, CrossSetup, Ledger, LedgerConfig, ProofKind, StatementEntry,
    checkpoint_root, genesis_root,
};
pub use transfer::{Account, FailReason, Outcome, Transfer, account_object, check_sets};
