//! The transparency log's leaf-hash index, held in memory: leaf hash → leaf index.
//!
//! An inclusion proof may be asked for by leaf hash (`GetInclusionProof`), and a
//! receipt finds the leaf of an acceptance by its entry. A table keyed by leaf hash
//! would put one randomly keyed insert — a page of its own to write — into every commit
//! for each leaf. The leaf hashes are already stored in order (the log's level-0 nodes),
//! so this index is built from them, on demand: a lookup in a view of the log first
//! indexes the committed leaves it has not seen yet (a committed leaf never changes),
//! then looks the hash up. It keeps the first 8 bytes of each hash (about 20 bytes of
//! memory a leaf) and confirms a candidate against the stored hash, so two leaves whose
//! hashes begin alike cost one more read, never a wrong answer.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::RwLock,
};

use redb::ReadableTable;

use super::StoreError;
use crate::tlog::merkle::Hash;

/// Leaf hash → index for the leaves of one store's log.
#[derive(Default)]
pub(crate) struct LeafIndex(RwLock<Indexed>);

#[derive(Default)]
struct Indexed {
    /// Leaves `0..covered` are indexed.
    covered: u64,
    /// The first 8 bytes of a leaf hash → the first leaf whose hash begins with them.
    first: HashMap<u64, u64>,
    /// Later leaves whose hashes begin like an earlier one's.
    more: HashMap<u64, Vec<u64>>,
}

fn prefix(hash: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(bytes)
}

impl Indexed {
    fn add(&mut self, hash: &[u8], index: u64) {
        let key = prefix(hash);
        match self.first.entry(key) {
            Entry::Occupied(_) => self.more.entry(key).or_default().push(index),
            Entry::Vacant(vacant) => {
                vacant.insert(index);
            }
        }
    }

    /// The indexed leaves whose hashes begin like `hash`, in the order they were added.
    fn candidates(&self, hash: &Hash) -> impl Iterator<Item = u64> + '_ {
        let key = prefix(hash);
        let first = self.first.get(&key).copied();
        let more = self.more.get(&key).into_iter().flatten().copied();
        first.into_iter().chain(more)
    }
}

impl LeafIndex {
    /// The index of the leaf with hash `hash` among the first `size` leaves of the log
    /// whose level-0 nodes are `nodes`, of which the first `committed` are durable (a
    /// writer's own transaction may hold more; a read transaction's are all committed).
    pub(super) fn find<T: ReadableTable<(u32, u64), &'static [u8]>>(
        &self,
        hash: &Hash,
        nodes: &T,
        (committed, size): (u64, u64),
    ) -> Result<Option<u64>, StoreError> {
        self.catch_up(nodes, committed)?;
        let covered = {
            let indexed = self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for index in indexed.candidates(hash).filter(|&i| i < size) {
                if leaf_hash(nodes, index)?.as_slice() == hash.as_slice() {
                    return Ok(Some(index));
                }
            }
            indexed.covered
        };
        // Leaves past what is indexed: the writer's transaction's own, not yet committed.
        for item in nodes.range((0, covered.min(size))..(0, size))? {
            let (key, value) = item?;
            if value.value() == hash.as_slice() {
                return Ok(Some(key.value().1));
            }
        }
        Ok(None)
    }

    /// Indexes the committed leaves `covered..committed`.
    pub(super) fn catch_up<T: ReadableTable<(u32, u64), &'static [u8]>>(
        &self,
        nodes: &T,
        committed: u64,
    ) -> Result<(), StoreError> {
        let behind = |indexed: &Indexed| indexed.covered < committed;
        if !behind(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return Ok(());
        }
        let mut indexed = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !behind(&indexed) {
            return Ok(());
        }
        for item in nodes.range((0, indexed.covered)..(0, committed))? {
            let (key, value) = item?;
            let index = key.value().1;
            if index != indexed.covered || value.value().len() != 32 {
                return Err(missing(indexed.covered));
            }
            indexed.add(value.value(), index);
            indexed.covered += 1;
        }
        if indexed.covered == committed {
            Ok(())
        } else {
            Err(missing(indexed.covered))
        }
    }
}

fn leaf_hash<T: ReadableTable<(u32, u64), &'static [u8]>>(
    nodes: &T,
    index: u64,
) -> Result<Vec<u8>, StoreError> {
    Ok(nodes
        .get((0, index))?
        .ok_or_else(|| missing(index))?
        .value()
        .to_vec())
}

fn missing(index: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "the log's leaf hash {index} is missing or malformed"
    ))
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, TableDefinition};

    use super::LeafIndex;
    use crate::tlog::merkle::Hash;

    const NODES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("n");

    /// A hash of `n` whose first 8 bytes are `prefix`'s.
    fn hash(prefix: u8, n: u8) -> Hash {
        let mut h = [prefix; 32];
        h[31] = n;
        h
    }

    /// Leaves whose hashes share their first 8 bytes are told apart by the stored hash;
    /// a view finds only its own leaves; a writer's uncommitted leaves are found without
    /// being indexed, and a later view that commits other hashes there finds those.
    #[test]
    fn finds_each_leaf_of_its_view_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let leaves = [hash(1, 0), hash(2, 0), hash(1, 1), hash(1, 2), hash(3, 0)];
        let tx = db.begin_write().unwrap();
        {
            let mut nodes = tx.open_table(NODES).unwrap();
            for (i, h) in leaves.iter().enumerate() {
                nodes.insert((0, i as u64), h.as_slice()).unwrap();
            }
            nodes.insert((1, 0), [9u8; 32].as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let index = LeafIndex::default();
        let read = db.begin_read().unwrap();
        let nodes = read.open_table(NODES).unwrap();
        for size in 0..=5u64 {
            for (i, h) in leaves.iter().enumerate() {
                let expected = (i as u64) < size;
                let found = index.find(h, &nodes, (size, size)).unwrap();
                assert_eq!(
                    found,
                    expected.then_some(i as u64),
                    "leaf {i} in a view of {size}"
                );
            }
            assert_eq!(index.find(&hash(1, 9), &nodes, (size, size)).unwrap(), None);
            assert_eq!(index.find(&[9u8; 32], &nodes, (size, size)).unwrap(), None);
        }

        // A writer's transaction with two leaves of its own, then aborted.
        let tx = db.begin_write().unwrap();
        {
            let mut nodes = tx.open_table(NODES).unwrap();
            nodes.insert((0, 5), hash(1, 5).as_slice()).unwrap();
            nodes.insert((0, 6), hash(4, 0).as_slice()).unwrap();
            assert_eq!(index.find(&hash(1, 5), &nodes, (5, 7)).unwrap(), Some(5));
            assert_eq!(index.find(&hash(4, 0), &nodes, (5, 7)).unwrap(), Some(6));
        }
        tx.abort().unwrap();
        // The next commits other leaves at those places.
        let tx = db.begin_write().unwrap();
        {
            let mut nodes = tx.open_table(NODES).unwrap();
            nodes.insert((0, 5), hash(5, 0).as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let read = db.begin_read().unwrap();
        let nodes = read.open_table(NODES).unwrap();
        assert_eq!(index.find(&hash(1, 5), &nodes, (6, 6)).unwrap(), None);
        assert_eq!(index.find(&hash(4, 0), &nodes, (6, 6)).unwrap(), None);
        assert_eq!(index.find(&hash(5, 0), &nodes, (6, 6)).unwrap(), Some(5));
        assert_eq!(index.find(&hash(1, 2), &nodes, (6, 6)).unwrap(), Some(3));
    }
}
