//! An append-only Merkle log in the shape of RFC 6962 / RFC 9162 (Certificate
//! Transparency), with BLAKE3: leaf hash `H(0x00 ‖ data)`, node hash `H(0x01 ‖ left ‖
//! right)`, the tree over `n` leaves split at the largest power of two below `n`.
//! Inclusion and consistency proofs and their verification follow RFC 9162 §2.1.3–2.1.4.
//!
//! The log keeps every complete aligned subtree hash (about `2n` hashes), so roots and
//! proofs cost `O(log n)` hash operations. A persistent log (redb) can rebuild one with
//! [`MerkleLog::from_leaf_hashes`].
//!
//! ```
//! use dag_core::merkle::{MerkleLog, leaf_hash, verify_inclusion, verify_consistency};
//!
//! let mut log = MerkleLog::new();
//! for i in 0..10u32 {
//!     log.append(&i.to_le_bytes());
//! }
//! let old_root = log.root_at(6).unwrap();
//! let proof = log.inclusion_proof(3, 10).unwrap();
//! verify_inclusion(&leaf_hash(&3u32.to_le_bytes()), 3, 10, &proof, &log.root()).unwrap();
//! let c = log.consistency_proof(6, 10).unwrap();
//! verify_consistency(6, 10, &old_root, &log.root(), &c).unwrap();
//! ```

use crate::{DecodeError, Hash32, Reader, Writer};
use thiserror::Error;

/// Why a Merkle request or proof failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// Asked about a leaf or tree size the log does not have.
    #[error("index {index} out of range for tree size {size}")]
    OutOfRange {
        /// The leaf index or old size.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The proof has the wrong number of hashes for its sizes.
    #[error("proof has {got} hashes, expected {expected}")]
    ProofLength {
        /// Hashes given.
        got: usize,
        /// Hashes needed.
        expected: usize,
    },
    /// The proof does not lead to the given root (wrong leaf, tampered proof, or a proof
    /// for another root).
    #[error("proof does not match root {expected}: computed {computed}")]
    RootMismatch {
        /// The root the verifier trusts.
        expected: String,
        /// The root the proof computes.
        computed: String,
    },
}

/// Result with [`MerkleError`].
pub type Result<T> = std::result::Result<T, MerkleError>;

/// `H(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(data);
    Hash32(*h.finalize().as_bytes())
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(&left.0);
    h.update(&right.0);
    Hash32(*h.finalize().as_bytes())
}

/// Root of the empty tree: `H()` (BLAKE3 of no bytes), as RFC 6962 defines MTH({}).
pub fn empty_root() -> Hash32 {
    Hash32::digest(&[])
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle log held in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleLog {
    /// `levels[k][i]` = hash of the complete subtree over leaves `[i·2^k, (i+1)·2^k)`.
    levels: Vec<Vec<Hash32>>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        MerkleLog {
            levels: vec![Vec::new()],
        }
    }

    /// A log over already hashed leaves (e.g. loaded from disk).
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash32>) -> Self {
        let mut log = Self::new();
        for l in leaves {
            log.append_leaf_hash(l);
        }
        log
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends `data` as a leaf; returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(data))
    }

    /// Appends an already computed leaf hash; returns its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash32) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let index = self.levels[0].len() as u64;
        self.levels[0].push(leaf);
        let mut k = 0;
        // Each time a level gains an even-indexed right sibling, the pair completes a node.
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
        index
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash32> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// MTH over leaves `[lo, hi)`, where `lo` is a multiple of the largest power of two
    /// ≤ `hi − lo` (true for every subtree of the RFC decomposition).
    fn subtree(&self, lo: u64, hi: u64) -> Hash32 {
        let n = hi - lo;
        if n.is_power_of_two() {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(lo >> k) as usize];
        }
        let s = split(n);
        node_hash(&self.subtree(lo, lo + s), &self.subtree(lo + s, hi))
    }

    /// Root of the current log.
    pub fn root(&self) -> Hash32 {
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// Root of the log when it had `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash32> {
        if size > self.size() {
            return Err(MerkleError::OutOfRange {
                index: size,
                size: self.size(),
            });
        }
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// Audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 PATH).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash32>> {
        if index >= size || size > self.size() {
            return Err(MerkleError::OutOfRange {
                index,
                size: size.min(self.size()),
            });
        }
        let mut path = Vec::new();
        self.path(index, 0, size, &mut path);
        Ok(path)
    }

    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash32>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, lo, lo + k, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.path(m - k, lo + k, hi, out);
            out.push(self.subtree(lo, lo + k));
        }
    }

    /// Proof that the tree of `old` leaves is a prefix of the tree of `new` leaves
    /// (RFC 6962 PROOF). Empty when `old == new` or `old == 0`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash32>> {
        if old > new || new > self.size() {
            return Err(MerkleError::OutOfRange {
                index: old,
                size: new.min(self.size()),
            });
        }
        let mut out = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut out);
        }
        Ok(out)
    }

    fn subproof(&self, m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Hash32>) {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(self.subtree(lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, lo, lo + k, complete, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.subtree(lo, lo + k));
        }
    }
}

fn mismatch(expected: &Hash32, computed: &Hash32) -> MerkleError {
    MerkleError::RootMismatch {
        expected: expected.to_hex(),
        computed: computed.to_hex(),
    }
}

/// Verifies that `leaf` (a [`leaf_hash`]) is at `index` in the tree of `size` leaves with
/// root `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash32,
    index: u64,
    size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<()> {
    if index >= size {
        return Err(MerkleError::OutOfRange { index, size });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected: inclusion_len(index, size),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected: inclusion_len(index, size),
        });
    }
    if r != *root {
        return Err(mismatch(root, &r));
    }
    Ok(())
}

fn inclusion_len(index: u64, size: u64) -> usize {
    let mut f = index;
    let mut s = size - 1;
    let mut len = 0;
    while s != 0 {
        if f & 1 == 0 && f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        f >>= 1;
        s >>= 1;
        len += 1;
    }
    len
}

/// Verifies that the tree of `old` leaves with root `old_root` is a prefix of the tree of
/// `new` leaves with root `new_root` (RFC 9162 §2.1.4.2). `old == new` needs an empty proof
/// and equal roots; `old == 0` is always consistent (empty proof).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<()> {
    if old > new {
        return Err(MerkleError::OutOfRange {
            index: old,
            size: new,
        });
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        if old == new && old_root != new_root {
            return Err(mismatch(new_root, old_root));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(MerkleError::ProofLength {
            got: 0,
            expected: 1,
        });
    }
    // If old is a power of two, the old root itself is the first node of the path.
    let mut path: Vec<Hash32> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let mut fnode = old - 1;
    let mut snode = new - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected: proof.len() - 1,
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected: proof.len() + 1,
        });
    }
    if fr != *old_root {
        return Err(mismatch(old_root, &fr));
    }
    if sr != *new_root {
        return Err(mismatch(new_root, &sr));
    }
    Ok(())
}

/// An inclusion proof as a value (for the wire and for signed receipts).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Tree size the proof is for.
    pub size: u64,
    /// The audit path.
    pub path: Vec<Hash32>,
}

impl InclusionProof {
    /// Most hashes in a path (trees up to 2^64 leaves).
    pub const MAX_PATH: usize = 64;

    /// Verifies against a leaf hash and a trusted root.
    pub fn verify(&self, leaf: &Hash32, root: &Hash32) -> Result<()> {
        verify_inclusion(leaf, self.index, self.size, &self.path, root)
    }

    /// Canonical encoding: index u64 ‖ size u64 ‖ count u8 ‖ hashes 32 each.
    pub fn encode(&self) -> Vec<u8> {
        encode_sized_path(self.index, self.size, &self.path)
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let (index, size, path) = decode_sized_path(bytes, ["index", "size"], Self::MAX_PATH)?;
        Ok(InclusionProof { index, size, path })
    }
}

/// A consistency proof as a value (for the wire): the log of `old_size` leaves is a prefix
/// of the log of `new_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsistencyProof {
    /// Size of the older tree.
    pub old_size: u64,
    /// Size of the newer tree.
    pub new_size: u64,
    /// The proof hashes.
    pub path: Vec<Hash32>,
}

impl ConsistencyProof {
    /// Most hashes in a proof (trees up to 2^64 leaves).
    pub const MAX_PATH: usize = 130;

    /// Verifies against two trusted roots.
    pub fn verify(&self, old_root: &Hash32, new_root: &Hash32) -> Result<()> {
        verify_consistency(self.old_size, self.new_size, old_root, new_root, &self.path)
    }

    /// Canonical encoding: old u64 ‖ new u64 ‖ count u8 ‖ hashes 32 each.
    pub fn encode(&self) -> Vec<u8> {
        encode_sized_path(self.old_size, self.new_size, &self.path)
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let (old_size, new_size, path) =
            decode_sized_path(bytes, ["old_size", "new_size"], Self::MAX_PATH)?;
        Ok(ConsistencyProof {
            old_size,
            new_size,
            path,
        })
    }
}

/// The wire shape both proofs share: `a u64 ‖ b u64 ‖ count u8 ‖ hashes 32 each` (at most
/// 255 hashes are written).
fn encode_sized_path(a: u64, b: u64, path: &[Hash32]) -> Vec<u8> {
    let n = path.len().min(u8::MAX as usize);
    let mut w = Writer::with_capacity(17 + 32 * n);
    w.u64(a).u64(b).u8(n as u8);
    for h in &path[..n] {
        w.raw(&h.0);
    }
    w.finish()
}

/// Strict decoding of [`encode_sized_path`]'s shape; `names` label the two integers in
/// errors, a path longer than `max` is refused before anything is allocated for it.
fn decode_sized_path(
    bytes: &[u8],
    names: [&'static str; 2],
    max: usize,
) -> std::result::Result<(u64, u64, Vec<Hash32>), DecodeError> {
    let mut r = Reader::new(bytes);
    let a = r.u64(names[0])?;
    let b = r.u64(names[1])?;
    let n = r.count_u8("path", max)?;
    let mut path = Vec::with_capacity(n.min(r.remaining() / 32));
    for _ in 0..n {
        path.push(Hash32(r.bytes32("path hash")?));
    }
    r.finish()?;
    Ok((a, b, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference MTH straight from RFC 6962 §2.1, over raw leaf data.
    fn mth(leaves: &[Vec<u8>]) -> Hash32 {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn data(i: u64) -> Vec<u8> {
        format!("leaf {i}").into_bytes()
    }

    fn log_of(n: u64) -> MerkleLog {
        let mut log = MerkleLog::new();
        for i in 0..n {
            assert_eq!(log.append(&data(i)), i);
        }
        log
    }

    #[test]
    fn roots_match_reference() {
        let all: Vec<Vec<u8>> = (0..70).map(data).collect();
        let log = log_of(70);
        for n in 0..=70 {
            assert_eq!(log.root_at(n).unwrap(), mth(&all[..n as usize]), "n={n}");
        }
        assert_eq!(MerkleLog::new().root(), empty_root());
        assert_eq!(
            MerkleLog::from_leaf_hashes((0..70).map(|i| leaf_hash(&data(i)))),
            log
        );
    }

    #[test]
    fn known_small_shapes() {
        let log = log_of(3);
        let (a, b, c) = (
            leaf_hash(&data(0)),
            leaf_hash(&data(1)),
            leaf_hash(&data(2)),
        );
        assert_eq!(log.root(), node_hash(&node_hash(&a, &b), &c));
        assert_eq!(log.inclusion_proof(2, 3).unwrap(), vec![node_hash(&a, &b)]);
        assert_eq!(log.inclusion_proof(0, 3).unwrap(), vec![b, c]);
        assert_eq!(log.consistency_proof(2, 3).unwrap(), vec![c]);
    }

    #[test]
    fn exhaustive_small_trees() {
        let log = log_of(33);
        for size in 1..=33 {
            let root = log.root_at(size).unwrap();
            for i in 0..size {
                let p = log.inclusion_proof(i, size).unwrap();
                assert_eq!(p.len(), inclusion_len(i, size));
                verify_inclusion(&leaf_hash(&data(i)), i, size, &p, &root).unwrap();
            }
            for old in 0..=size {
                let p = log.consistency_proof(old, size).unwrap();
                verify_consistency(old, size, &log.root_at(old).unwrap(), &root, &p).unwrap();
            }
        }
    }

    #[test]
    fn bad_requests_and_proofs() {
        let log = log_of(8);
        assert!(matches!(
            log.inclusion_proof(8, 8),
            Err(MerkleError::OutOfRange { .. })
        ));
        assert!(matches!(
            log.inclusion_proof(0, 9),
            Err(MerkleError::OutOfRange { .. })
        ));
        assert!(matches!(
            log.consistency_proof(5, 4),
            Err(MerkleError::OutOfRange { .. })
        ));
        let root = log.root();
        let p = log.inclusion_proof(3, 8).unwrap();
        // Too short, too long, another root.
        assert!(verify_inclusion(&leaf_hash(&data(3)), 3, 8, &p[..2], &root).is_err());
        let mut long = p.clone();
        long.push(root);
        assert!(verify_inclusion(&leaf_hash(&data(3)), 3, 8, &long, &root).is_err());
        let other = log_of(9).root();
        assert!(matches!(
            verify_inclusion(&leaf_hash(&data(3)), 3, 8, &p, &other),
            Err(MerkleError::RootMismatch { .. })
        ));
        // A consistency proof between equal sizes must be empty with equal roots.
        assert!(verify_consistency(8, 8, &root, &other, &[]).is_err());
        assert!(verify_consistency(3, 8, &log.root_at(3).unwrap(), &root, &[]).is_err());
        let cp = ConsistencyProof {
            old_size: 3,
            new_size: 8,
            path: log.consistency_proof(3, 8).unwrap(),
        };
        assert_eq!(ConsistencyProof::decode(&cp.encode()).unwrap(), cp);
        cp.verify(&log.root_at(3).unwrap(), &root).unwrap();
        assert!(cp.verify(&log.root_at(2).unwrap(), &root).is_err());
        let ip = InclusionProof {
            index: 3,
            size: 8,
            path: p,
        };
        assert_eq!(InclusionProof::decode(&ip.encode()).unwrap(), ip);
        ip.verify(&leaf_hash(&data(3)), &root).unwrap();
    }

    #[test]
    fn tampered_log_is_detected() {
        // A log whose old leaf was rewritten cannot prove consistency with the old root.
        let honest = log_of(20);
        let old_root = honest.root_at(12).unwrap();
        let mut leaves: Vec<Hash32> = (0..20).map(|i| leaf_hash(&data(i))).collect();
        leaves[5] = leaf_hash(b"rewritten history");
        let forged = MerkleLog::from_leaf_hashes(leaves);
        let p = forged.consistency_proof(12, 20).unwrap();
        assert!(verify_consistency(12, 20, &old_root, &forged.root(), &p).is_err());
        // Nor can it prove the original leaf 5 against the root it now serves.
        let p = forged.inclusion_proof(5, 20).unwrap();
        assert!(verify_inclusion(&leaf_hash(&data(5)), 5, 20, &p, &forged.root()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn inclusion_proofs_verify_and_tampering_fails(size in 1u64..300, seed in any::<u64>(), flip in any::<u8>()) {
            let log = log_of(size);
            let i = seed % size;
            let root = log.root();
            let mut p = log.inclusion_proof(i, size).unwrap();
            prop_assert!(verify_inclusion(&leaf_hash(&data(i)), i, size, &p, &root).is_ok());
            // Wrong leaf, wrong index.
            prop_assert!(verify_inclusion(&leaf_hash(b"not there"), i, size, &p, &root).is_err());
            if size > 1 {
                let j = (i + 1) % size;
                prop_assert!(verify_inclusion(&leaf_hash(&data(i)), j, size, &p, &root).is_err());
            }
            // One flipped bit anywhere in the path.
            if !p.is_empty() {
                let k = (seed as usize / 7) % p.len();
                p[k].0[(flip % 32) as usize] ^= 1 << (flip % 8);
                prop_assert!(verify_inclusion(&leaf_hash(&data(i)), i, size, &p, &root).is_err());
            }
        }

        #[test]
        fn consistency_proofs_verify_and_tampering_fails(new in 1u64..300, seed in any::<u64>(), flip in any::<u8>()) {
            let log = log_of(new);
            let old = seed % (new + 1);
            let (old_root, new_root) = (log.root_at(old).unwrap(), log.root());
            let mut p = log.consistency_proof(old, new).unwrap();
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &p).is_ok());
            if old > 0 && old < new {
                // Another old root, another new root, another old size.
                let wrong = leaf_hash(b"x");
                prop_assert!(verify_consistency(old, new, &wrong, &new_root, &p).is_err());
                prop_assert!(verify_consistency(old, new, &old_root, &wrong, &p).is_err());
                if old > 1 {
                    let other = log.root_at(old - 1).unwrap();
                    prop_assert!(verify_consistency(old - 1, new, &other, &new_root, &p).is_err());
                }
                let k = (seed as usize / 7) % p.len();
                p[k].0[(flip % 32) as usize] ^= 1 << (flip % 8);
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &p).is_err());
            }
        }
    }
}
