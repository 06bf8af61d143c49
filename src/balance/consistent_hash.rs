//! PLACEHOLDER until the real algorithm lands.
use super::{active_tier_is_backup, eligible, Balancer, Member, Tried};

/// Placeholder.
#[derive(Debug)]
pub struct ConsistentHash;

impl ConsistentHash {
    /// Builds over `members`.
    pub fn new(_members: &[Member]) -> Self {
        ConsistentHash
    }
}

impl Balancer for ConsistentHash {
    fn pick(&self, members: &[Member], _key: Option<u64>, tried: &Tried) -> Option<usize> {
        let backup = active_tier_is_backup(members);
        (0..members.len()).find(|&i| eligible(members, i, backup, tried))
    }
}
