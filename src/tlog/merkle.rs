//! The log's Merkle tree, following RFC 9162 §2.1 (same hashing as RFC 6962):
//! leaf/node hashing (§2.1.1), inclusion proofs (§2.1.3) and consistency
//! proofs (§2.1.4). Proofs are built from stored *perfect* subtrees, so a
//! database only keeps one hash per complete node; verification needs no
//! storage at all.

use ring::digest::{Context, SHA256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hash of a log entry: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0x00], entry])
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// Read access to stored perfect subtrees. The node at (`level`, `index`) is
/// the root of the perfect subtree over leaves `[index·2^level, (index+1)·2^level)`;
/// level 0 holds the leaf hashes. Only subtrees lying entirely inside the
/// tree size passed to the calling function (for [`appended_nodes`]: the size
/// before the append) are ever requested.
pub trait Subtrees {
    /// The storage error, passed through unchanged.
    type Error;
    /// Returns the stored hash of the perfect subtree at (`level`, `index`).
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof could not be produced from storage.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E> {
    /// The requested leaf is not in the tree.
    #[error(
        "leaf index {index} is not in a tree of size {size}: it was added after that size, \
         so its proof needs a size above {index}"
    )]
    IndexOutOfRange {
        /// Requested leaf index.
        index: u64,
        /// Tree size the proof was requested for.
        size: u64,
    },
    /// A consistency proof was requested from a larger to a smaller tree.
    #[error("cannot prove consistency from size {old} to the smaller size {new}")]
    SizeDecreased {
        /// Older (first) tree size.
        old: u64,
        /// Newer (second) tree size.
        new: u64,
    },
    /// The `Subtrees` implementation failed.
    #[error("reading a stored subtree failed: {0}")]
    Storage(#[source] E),
}

/// Why a proof failed to verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// The new tree is smaller than the old one.
    #[error("new tree size {new} is smaller than old tree size {old}; a log only grows")]
    SizeDecreased {
        /// Old tree size.
        old: u64,
        /// New tree size.
        new: u64,
    },
    /// The proof does not have the number of hashes these sizes require.
    #[error("proof has {got} hashes but these tree sizes need exactly {expected}")]
    WrongProofLength {
        /// Number of hashes the sizes require.
        expected: usize,
        /// Number of hashes supplied.
        got: usize,
    },
    /// The inclusion proof leads to a different root.
    #[error(
        "inclusion proof does not lead to the root: entry, index, size, proof or root is wrong"
    )]
    RootMismatch,
    /// The consistency proof does not reproduce the old root.
    #[error("consistency proof does not yield the old root: old size, old root or proof is wrong")]
    OldRootMismatch,
    /// The consistency proof does not reproduce the new root.
    #[error("consistency proof does not yield the new root: new size, new root or proof is wrong")]
    NewRootMismatch,
}

/// The nodes to store after appending leaf `index` (whose hash is `leaf`) to
/// a tree of size `index`: the leaf itself as (0, `index`, `leaf`) followed by
/// every perfect parent the append completes, as (level, index, hash).
pub fn appended_nodes<S: Subtrees + ?Sized>(
    index: u64,
    leaf: Hash,
    subtrees: &S,
) -> Result<Vec<(u32, u64, Hash)>, S::Error> {
    let (mut level, mut i, mut hash) = (0u32, index, leaf);
    let mut nodes = vec![(level, i, hash)];
    while i & 1 == 1 {
        hash = node_hash(&subtrees.subtree(level, i - 1)?, &hash);
        level += 1;
        i >>= 1;
        nodes.push((level, i, hash));
    }
    Ok(nodes)
}

/// Largest power of two strictly below `n` (`n >= 2`): RFC 9162's split point.
fn split(n: u64) -> u64 {
    1 << (n - 1).ilog2()
}

/// MTH of leaves `[begin, end)`, for ranges that occur in RFC 9162's
/// recursion (`begin` is a multiple of the smallest power of two `>= end-begin`).
/// Such a range is a run of perfect subtrees of decreasing size, folded
/// right-to-left: at most 64 lookups.
fn range_hash<S: Subtrees + ?Sized>(begin: u64, end: u64, subtrees: &S) -> Result<Hash, S::Error> {
    let mut parts = Vec::new();
    let mut at = begin;
    while at < end {
        let level = at.trailing_zeros().min((end - at).ilog2());
        parts.push(subtrees.subtree(level, at >> level)?);
        at += 1 << level;
    }
    let mut acc = parts.pop().unwrap_or_else(empty_root);
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The root hash (MTH) of the first `size` leaves.
pub fn root<S: Subtrees + ?Sized>(size: u64, subtrees: &S) -> Result<Hash, S::Error> {
    if size == 0 {
        Ok(empty_root())
    } else {
        range_hash(0, size, subtrees)
    }
}

/// The inclusion proof (RFC 9162 §2.1.3.1 PATH) of leaf `index` in the tree of
/// size `size`, ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof<S: Subtrees + ?Sized>(
    index: u64,
    size: u64,
    subtrees: &S,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    let (mut begin, mut end, mut proof) = (0, size, Vec::new());
    let hash = |b, e| range_hash(b, e, subtrees).map_err(TreeError::Storage);
    while end - begin > 1 {
        let mid = begin + split(end - begin);
        if index < mid {
            proof.push(hash(mid, end)?);
            end = mid;
        } else {
            proof.push(hash(begin, mid)?);
            begin = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof (RFC 9162 §2.1.4.1 PROOF/SUBPROOF) from the tree of
/// size `old` to the tree of size `new`; empty when `old` is 0 or `old == new`.
pub fn consistency_proof<S: Subtrees + ?Sized>(
    old: u64,
    new: u64,
    subtrees: &S,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    if old > new {
        return Err(TreeError::SizeDecreased { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let (mut begin, mut end, mut proof) = (0, new, Vec::new());
    let mut whole_old_tree = true;
    let hash = |b, e| range_hash(b, e, subtrees).map_err(TreeError::Storage);
    // Invariant: begin < old <= end.
    while old < end {
        let mid = begin + split(end - begin);
        if old <= mid {
            proof.push(hash(mid, end)?);
            end = mid;
        } else {
            proof.push(hash(begin, mid)?);
            begin = mid;
            whole_old_tree = false;
        }
    }
    if !whole_old_tree {
        proof.push(hash(begin, end)?);
    }
    proof.reverse();
    Ok(proof)
}

/// Bit length of `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Number of hashes in the inclusion proof for `index < size`.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    (inner + index.checked_shr(inner).unwrap_or(0).count_ones()) as usize
}

/// Number of hashes in the consistency proof for `0 < old < new`. Since
/// `new > old`, `inner > old.trailing_zeros()`, so the subtraction cannot wrap.
fn consistency_len(old: u64, new: u64) -> usize {
    let seed = u32::from(!old.is_power_of_two());
    let inner = bit_len((old - 1) ^ (new - 1));
    let border = (old - 1).checked_shr(inner).unwrap_or(0).count_ones();
    (seed + inner - old.trailing_zeros() + border) as usize
}

fn check_len(proof: &[Hash], expected: usize) -> Result<(), ProofError> {
    if proof.len() == expected {
        Ok(())
    } else {
        Err(ProofError::WrongProofLength {
            expected,
            got: proof.len(),
        })
    }
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of size `size` with
/// root `root`, following RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    check_len(proof, inclusion_len(index, size))?;
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf_hash);
    for p in proof {
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // snode == 0 here: the length check above guarantees it.
    if r == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of size `old_size` with root `old_root` is a prefix
/// of the tree of size `new_size` with root `new_root`, following RFC 9162
/// §2.1.4.2. For `old_size == 0` the proof must be empty and `old_root` must
/// be [`empty_root`]; for equal sizes the proof must be empty and the roots equal.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if new_size < old_size {
        return Err(ProofError::SizeDecreased {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        check_len(proof, 0)?;
        return if old_size == 0 && *old_root != empty_root() {
            Err(ProofError::OldRootMismatch)
        } else if old_size == new_size && old_root != new_root {
            Err(ProofError::NewRootMismatch)
        } else {
            Ok(())
        };
    }
    check_len(proof, consistency_len(old_size, new_size))?;
    // RFC 9162 prepends old_root when old_size is a power of two; otherwise
    // the proof starts with it (non-empty: the length check passed).
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        let expected = ProofError::WrongProofLength {
            expected: 1,
            got: 0,
        };
        proof.split_first().ok_or(expected)?
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if fr != *old_root {
        Err(ProofError::OldRootMismatch)
    } else if sr != *new_root {
        Err(ProofError::NewRootMismatch)
    } else {
        Ok(())
    }
}

/// The error of [`MemoryTree`]'s [`Subtrees`] implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no complete subtree is stored at level {level}, index {index}")]
pub struct MissingSubtree {
    /// Requested level.
    pub level: u32,
    /// Requested index within the level.
    pub index: u64,
}

/// An in-memory tree storing every perfect subtree, one `Vec` per level.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends `entry` and returns its leaf index.
    pub fn push(&mut self, entry: &[u8]) -> u64 {
        let index = self.size();
        // Invariant: appended_nodes only reads left siblings of the new leaf's
        // ancestors, which are complete subtrees of the current tree and stored.
        let nodes =
            appended_nodes(index, leaf_hash(entry), self).expect("left siblings are stored");
        for (level, _, hash) in nodes {
            let level = level as usize;
            if level == self.levels.len() {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
        }
        index
    }

    /// The root hash of the whole tree.
    pub fn root(&self) -> Hash {
        // Invariant: root() only reads complete subtrees of the current tree.
        root(self.size(), self).expect("complete subtrees are stored")
    }
}

impl Subtrees for MemoryTree {
    type Error = MissingSubtree;

    fn subtree(&self, level: u32, index: u64) -> Result<Hash, MissingSubtree> {
        let level_nodes = usize::try_from(level).ok().and_then(|l| self.levels.get(l));
        let node = level_nodes.and_then(|nodes| nodes.get(usize::try_from(index).ok()?));
        node.copied().ok_or(MissingSubtree { level, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // transparency-dev/merkle testonly/constants.go: LeafInputs, NodeHashes, RootHashes.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    const NODES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];
    // transparency-dev/merkle proof/verify_test.go: inclusionProofs (leaf there is
    // 1-based; converted to 0-based index here) and consistencyProofs.
    #[rustfmt::skip]
    const INCLUSION: [(usize, usize, &[&str]); 5] = [
        (0, 1, &[]),
        (0, 8, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                 "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                 "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
        (5, 8, &["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                 "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                 "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (1, 5, &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                 "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                 "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    ];
    #[rustfmt::skip]
    const CONSISTENCY: [(usize, usize, &[&str]); 5] = [
        (1, 1, &[]),
        (1, 8, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                 "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                 "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
        (6, 8, &["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                 "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                 "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
        (2, 5, &["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                 "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
        (6, 7, &["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                 "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                 "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    ];

    /// A view of a tree that fails the test if anything outside `size` is read.
    struct Bounded<'a>(&'a MemoryTree, u64);
    impl Subtrees for Bounded<'_> {
        type Error = MissingSubtree;
        fn subtree(&self, level: u32, index: u64) -> Result<Hash, MissingSubtree> {
            assert!(
                (index + 1) << level <= self.1,
                "read ({level},{index}) beyond size {}",
                self.1
            );
            self.0.subtree(level, index)
        }
    }

    fn tree_of(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            let nodes = appended_nodes(i, leaf_hash(&i.to_be_bytes()), &Bounded(&t, i)).unwrap();
            assert_eq!(t.push(&i.to_be_bytes()), i);
            for (level, index, hash) in nodes {
                assert_eq!(t.subtree(level, index), Ok(hash));
            }
        }
        t
    }

    fn hashes(v: &[&str]) -> Vec<Hash> {
        v.iter().map(|s| h(s)).collect()
    }

    fn vector_tree() -> MemoryTree {
        let mut t = MemoryTree::new();
        for leaf in LEAVES {
            t.push(&hex::decode(leaf).unwrap());
        }
        t
    }

    #[test]
    fn rfc6962_roots_and_nodes() {
        let t = vector_tree();
        for (size, want) in ROOTS.iter().enumerate() {
            assert_eq!(
                root(size as u64, &t).unwrap(),
                h(want),
                "root of size {size}"
            );
        }
        assert_eq!(t.root(), h(ROOTS[8]));
        assert_eq!(empty_root(), h(ROOTS[0]));
        for (level, nodes) in NODES.iter().enumerate() {
            assert_eq!(t.levels[level], hashes(nodes), "level {level}");
        }
    }

    #[test]
    fn rfc6962_inclusion_vectors() {
        let t = vector_tree();
        for (index, size, want) in INCLUSION {
            let proof = inclusion_proof(index as u64, size as u64, &t).unwrap();
            assert_eq!(proof, hashes(want), "inclusion {index} in {size}");
            let leaf = leaf_hash(&hex::decode(LEAVES[index]).unwrap());
            verify_inclusion(&leaf, index as u64, size as u64, &proof, &h(ROOTS[size])).unwrap();
        }
    }

    #[test]
    fn rfc6962_consistency_vectors() {
        let t = vector_tree();
        for (old, new, want) in CONSISTENCY {
            let (r1, r2) = (h(ROOTS[old]), h(ROOTS[new]));
            let (old, new) = (old as u64, new as u64);
            let proof = consistency_proof(old, new, &t).unwrap();
            assert_eq!(proof, hashes(want), "consistency {old} -> {new}");
            verify_consistency(old, new, &r1, &r2, &proof).unwrap();
            if !proof.is_empty() {
                assert!(
                    verify_consistency(old, new, &r2, &r1, &proof).is_err(),
                    "swapped roots"
                );
                assert!(
                    verify_consistency(old, new, &r1, &r2, &proof[1..]).is_err(),
                    "truncated"
                );
            }
        }
    }

    #[test]
    fn edge_cases() {
        let (e, x) = (empty_root(), [7u8; 32]);
        assert_eq!(verify_consistency(0, 0, &e, &e, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 5, &e, &x, &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, 5, &x, &x, &[]),
            Err(ProofError::OldRootMismatch)
        );
        assert_eq!(
            verify_consistency(3, 3, &x, &e, &[]),
            Err(ProofError::NewRootMismatch)
        );
        assert_eq!(
            verify_consistency(3, 3, &x, &x, &[e]),
            Err(ProofError::WrongProofLength {
                expected: 0,
                got: 1
            })
        );
        assert_eq!(
            verify_consistency(2, 1, &x, &x, &[]),
            Err(ProofError::SizeDecreased { old: 2, new: 1 })
        );
        assert_eq!(
            verify_inclusion(&x, 0, 0, &[], &x),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(verify_inclusion(&x, 0, 1, &[], &x), Ok(()));
        let t = vector_tree();
        assert!(matches!(
            inclusion_proof(8, 8, &t),
            Err(TreeError::IndexOutOfRange { index: 8, size: 8 })
        ));
        assert!(matches!(
            consistency_proof(5, 4, &t),
            Err(TreeError::SizeDecreased { .. })
        ));
        assert!(matches!(
            inclusion_proof(0, 9, &t),
            Err(TreeError::Storage(MissingSubtree { .. }))
        ));
    }

    fn naive_mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = 1 << (n - 1).ilog2();
                node_hash(&naive_mth(&leaves[..k]), &naive_mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn root_matches_naive_mth() {
        let t = tree_of(70);
        let leaves: Vec<Hash> = (0..70u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 0..=70usize {
            assert_eq!(
                root(n as u64, &Bounded(&t, n as u64)).unwrap(),
                naive_mth(&leaves[..n]),
                "size {n}"
            );
        }
    }

    fn flip(hash: &Hash, byte: usize) -> Hash {
        let mut out = *hash;
        out[byte] ^= 0x01;
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn proofs_verify_and_tampering_fails(
            size in 1u64..300, a in any::<u64>(), b in any::<u64>(), byte in 0usize..32,
        ) {
            let t = tree_of(size);
            let view = Bounded(&t, size);
            let top = root(size, &view).unwrap();
            for i in 0..size {
                let proof = inclusion_proof(i, size, &view).unwrap();
                let leaf = leaf_hash(&i.to_be_bytes());
                prop_assert_eq!(verify_inclusion(&leaf, i, size, &proof, &top), Ok(()));
            }
            let i = a % size;
            let leaf = leaf_hash(&i.to_be_bytes());
            let proof = inclusion_proof(i, size, &view).unwrap();
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(&bad[k], byte);
                prop_assert!(verify_inclusion(&leaf, i, size, &bad, &top).is_err());
            }
            prop_assert!(verify_inclusion(&leaf, i, size, &proof, &flip(&top, byte)).is_err());
            prop_assert!(verify_inclusion(&flip(&leaf, byte), i, size, &proof, &top).is_err());
            if size > 1 {
                let j = (i + 1 + b % (size - 1)) % size;
                prop_assert!(verify_inclusion(&leaf, j, size, &proof, &top).is_err());
            }
            prop_assert!(verify_inclusion(&leaf, size, size, &proof, &top).is_err());
            let longer = [&proof[..], &[top]].concat();
            prop_assert!(verify_inclusion(&leaf, i, size, &longer, &top).is_err());
            if let Some((_, shorter)) = proof.split_last() {
                prop_assert!(verify_inclusion(&leaf, i, size, shorter, &top).is_err());
            }

            for old in 0..=size {
                let proof = consistency_proof(old, size, &view).unwrap();
                let r1 = root(old, &view).unwrap();
                prop_assert_eq!(verify_consistency(old, size, &r1, &top, &proof), Ok(()));
            }
            let new = 1 + b % size;
            let old = a % (new + 1);
            let view = Bounded(&t, new);
            let proof = consistency_proof(old, new, &view).unwrap();
            let (r1, r2) = (root(old, &view).unwrap(), root(new, &view).unwrap());
            prop_assert_eq!(verify_consistency(old, new, &r1, &r2, &proof), Ok(()));
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(&bad[k], byte);
                prop_assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
            }
            prop_assert!(verify_consistency(old, new, &flip(&r1, byte), &r2, &proof).is_err());
            let longer = [&proof[..], &[r2]].concat();
            prop_assert!(verify_consistency(old, new, &r1, &r2, &longer).is_err());
            if let Some((_, shorter)) = proof.split_last() {
                prop_assert!(verify_consistency(old, new, &r1, &r2, shorter).is_err());
            }
            if old > 0 {
                prop_assert!(verify_consistency(old, new, &r1, &flip(&r2, byte), &proof).is_err());
            }
            if 0 < old && old < new {
                prop_assert!(verify_consistency(old - 1, new, &r1, &r2, &proof).is_err());
                prop_assert!(verify_consistency(old + 1, new, &r1, &r2, &proof).is_err());
            }
        }
    }
}
