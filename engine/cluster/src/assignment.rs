//! Which live node should own each partition: rendezvous (highest random weight) hashing.
//! Every node computes the same answer from the same list of live nodes, with no
//! coordination; when a node leaves, only its partitions move (each to the node with the
//! next highest weight), and a node that joins takes about `1/N` of them, from every node.

use kizo_ledger::routing::mix64;

use crate::ClusterError;

/// The longest node id.
pub const NODE_ID_MAX: usize = 64;

/// A node's name in the cluster (`--node-id`): 1 to 64 characters of `a-z`, `0-9`, `-`,
/// `_` and `.`, so that it prints safely in logs, metrics labels and SQL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(name: &str) -> Result<NodeId, ClusterError> {
        let valid = (1..=NODE_ID_MAX).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if valid {
            Ok(NodeId(name.to_string()))
        } else {
            Err(ClusterError::NodeId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node's 64-bit key: its bytes folded through the workspace's mixer, 8 at a time.
    fn key(&self) -> u64 {
        self.0
            .as_bytes()
            .chunks(8)
            .fold(self.0.len() as u64, |key, chunk| {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                mix64(key ^ u64::from_le_bytes(word))
            })
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How much `node` wants `partition`.
fn weight(node: &NodeId, partition: u32) -> u64 {
    mix64(node.key() ^ mix64(u64::from(partition)))
}

/// The node that should own `partition` among `live` (in any order, without duplicates);
/// `None` when no node is live. Ties (a 2^-64 chance) go to the greater id.
pub fn owner_of(partition: u32, live: &[NodeId]) -> Option<&NodeId> {
    live.iter()
        .max_by_key(|node| (weight(node, partition), *node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::new(n).unwrap()).collect()
    }

    #[test]
    fn ids_are_checked() {
        assert!(NodeId::new("node-1.eu_west").is_ok());
        for bad in ["", "Node", "a b", "é", &"x".repeat(65), "a;drop"] {
            assert_eq!(NodeId::new(bad), Err(ClusterError::NodeId), "{bad}");
        }
    }

    #[test]
    fn the_choice_is_stable_and_fair() {
        // The contract between nodes of one cluster (and of two versions during a rolling
        // upgrade): the same live set gives the same owners.
        let live = nodes(&["a", "b", "c"]);
        let owners: Vec<&str> = (0..8)
            .map(|p| owner_of(p, &live).unwrap().as_str())
            .collect();
        assert_eq!(owners, ["b", "a", "b", "c", "b", "b", "b", "b"]);
        let mut per_node = [0u32; 3];
        for p in 0..3000 {
            let owner = owner_of(p, &live).unwrap();
            per_node[live.iter().position(|n| n == owner).unwrap()] += 1;
        }
        assert!(
            per_node.iter().all(|&n| (900..1100).contains(&n)),
            "{per_node:?}"
        );
        assert_eq!(owner_of(0, &[]), None);
    }

    proptest! {
        /// A node leaving moves its partitions only; a node joining takes partitions only.
        #[test]
        fn movement_is_bounded(count in 2usize..8, leaving in 0usize..8, partitions in 1u32..256) {
            let leaving = leaving % count;
            let all: Vec<NodeId> = (0..count).map(|i| NodeId::new(&format!("n{i}")).unwrap()).collect();
            let rest: Vec<NodeId> = all.iter().enumerate().filter(|(i, _)| *i != leaving).map(|(_, n)| n.clone()).collect();
            for p in 0..partitions {
                let before = owner_of(p, &all).unwrap();
                let after = owner_of(p, &rest).unwrap();
                if before != &all[leaving] {
                    prop_assert_eq!(before, after, "partition {} moved though its owner stayed", p);
                }
                // Order of the list does not matter.
                let reversed: Vec<NodeId> = rest.iter().rev().cloned().collect();
                prop_assert_eq!(owner_of(p, &reversed), Some(after));
            }
        }
    }
}
