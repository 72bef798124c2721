//! Pending transactions and the block-building policy.
//!
//! The pool keeps, per sender, the transactions whose nonces run on from the account's committed
//! nonce. Only those contiguous runs are candidates for a block.
//!
//! **Fairness policy** (SELF's Proof-of-AI rule, SPEC §6). When more candidates wait than a block
//! holds (`capacity`), the proposer fills it in four draws, each from what earlier draws left:
//! 1. 20% of `capacity` by highest fee;
//! 2. 20% by lowest fee;
//! 3. 50% (whatever the other draws do not use) closest to the median fee of all candidates;
//! 4. 10% oldest (earliest arrival at this node).
//!
//! Ties break by arrival order, then by hash, so the draw is a pure function of the candidates.
//! A sender's transaction only counts if all its lower nonces are drawn too (a later nonce cannot
//! execute without them), so a block can come out slightly under-full. Within the block,
//! transactions keep arrival order, except that each sender's transactions are placed in nonce
//! order. Validators cannot check this policy on each other's blocks (their pools differ); it is
//! the proposer's rule, and the vectors in the tests pin it down.

use crate::{Address, ChainError, Tx, TxHash, MIN_FEE};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How far ahead of an account's committed nonce the pool accepts transactions.
pub const NONCE_WINDOW: u64 = 1024;

/// A candidate as the fairness draw sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub hash: TxHash,
    pub fee: u128,
    /// Arrival order at this node (lower is older).
    pub seq: u64,
    pub sender: Address,
    pub nonce: u64,
}

/// Picks up to `capacity` candidates by the fairness policy and returns their indices in block order.
pub fn fair_selection(candidates: &[Candidate], capacity: usize) -> Vec<usize> {
    let n = candidates.len();
    let mut chosen: Vec<usize> = if n <= capacity {
        (0..n).collect()
    } else {
        let high = capacity * 20 / 100;
        let low = capacity * 20 / 100;
        let oldest = capacity * 10 / 100;
        let middle = capacity - high - low - oldest;
        let mut fees: Vec<u128> = candidates.iter().map(|c| c.fee).collect();
        fees.sort_unstable();
        let median = fees[(n - 1) / 2];
        let mut taken = vec![false; n];
        let mut chosen = Vec::with_capacity(capacity);
        let mut draw = |count: usize, key: &dyn Fn(&Candidate) -> (u128, u64, TxHash)| {
            let mut order: Vec<usize> = (0..n).filter(|&i| !taken[i]).collect();
            order.sort_by_key(|&i| key(&candidates[i]));
            for i in order.into_iter().take(count) {
                taken[i] = true;
                chosen.push(i);
            }
        };
        draw(high, &|c| (u128::MAX - c.fee, c.seq, c.hash));
        draw(low, &|c| (c.fee, c.seq, c.hash));
        draw(middle, &|c| (c.fee.abs_diff(median), c.seq, c.hash));
        draw(oldest, &|c| (0, c.seq, c.hash));
        chosen
    };
    // Keep, per sender, only an unbroken run of nonces starting at its lowest candidate nonce.
    let lowest: HashMap<Address, u64> = candidates.iter().fold(HashMap::new(), |mut m, c| {
        let e = m.entry(c.sender).or_insert(c.nonce);
        *e = (*e).min(c.nonce);
        m
    });
    let drawn: HashSet<(Address, u64)> = chosen.iter().map(|&i| (candidates[i].sender, candidates[i].nonce)).collect();
    chosen.retain(|&i| {
        let c = &candidates[i];
        (lowest[&c.sender]..c.nonce).all(|earlier| drawn.contains(&(c.sender, earlier)))
    });
    // Arrival order, with each sender's transactions re-dealt into its slots in nonce order.
    chosen.sort_by_key(|&i| (candidates[i].seq, candidates[i].hash));
    let mut by_sender: BTreeMap<Address, Vec<usize>> = BTreeMap::new();
    for &i in &chosen {
        by_sender.entry(candidates[i].sender).or_default().push(i);
    }
    for list in by_sender.values_mut() {
        list.sort_by_key(|&i| candidates[i].nonce);
        list.reverse();
    }
    chosen.iter().map(|&slot| by_sender.get_mut(&candidates[slot].sender).and_then(|l| l.pop()).unwrap_or(slot)).collect()
}

struct Pending {
    tx: Tx,
    seq: u64,
}

/// The node's pool of admitted, not yet committed transactions.
pub struct Mempool {
    chain_id: String,
    capacity: usize,
    by_hash: HashMap<TxHash, Pending>,
    by_sender: BTreeMap<Address, BTreeMap<u64, TxHash>>,
    next_seq: u64,
}

impl Mempool {
    /// An empty pool holding at most `capacity` transactions.
    pub fn new(chain_id: &str, capacity: usize) -> Mempool {
        Mempool { chain_id: chain_id.into(), capacity, by_hash: HashMap::new(), by_sender: BTreeMap::new(), next_seq: 0 }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn contains(&self, hash: &TxHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Admits a transaction whose signature the caller has checked, given the sender's committed
    /// nonce. Refuses wrong chain ids, low fees, stale or far-future nonces, a second transaction
    /// for the same sender and nonce, duplicates, and admission to a full pool.
    pub fn admit(&mut self, tx: Tx, committed_nonce: u64) -> Result<TxHash, ChainError> {
        let body = &tx.body;
        if body.chain_id != self.chain_id {
            return Err(ChainError::WrongChain { got: body.chain_id.clone(), want: self.chain_id.clone() });
        }
        if body.fee < MIN_FEE {
            return Err(ChainError::FeeTooLow { got: body.fee, min: MIN_FEE });
        }
        if body.nonce < committed_nonce || body.nonce >= committed_nonce.saturating_add(NONCE_WINDOW) {
            return Err(ChainError::BadNonce { got: body.nonce, want: committed_nonce });
        }
        let hash = tx.hash();
        if self.by_hash.contains_key(&hash) {
            return Err(ChainError::Duplicate);
        }
        let sender = body.sender();
        if self.by_sender.get(&sender).is_some_and(|n| n.contains_key(&body.nonce)) {
            return Err(ChainError::InvalidArgument(format!("nonce {} of {sender} is already pending", body.nonce)));
        }
        if self.by_hash.len() >= self.capacity {
            return Err(ChainError::MempoolFull);
        }
        self.by_sender.entry(sender).or_default().insert(body.nonce, hash);
        self.by_hash.insert(hash, Pending { tx, seq: self.next_seq });
        self.next_seq += 1;
        Ok(hash)
    }

    /// Up to `capacity` transactions for the next block, drawn by the fairness policy from each
    /// sender's contiguous run of nonces starting at `committed_nonce(sender)`.
    pub fn select(&self, capacity: usize, committed_nonce: impl Fn(&Address) -> u64) -> Vec<Tx> {
        let mut candidates = Vec::new();
        for (sender, nonces) in &self.by_sender {
            let first = committed_nonce(sender);
            for (want, (&nonce, hash)) in (first..).zip(nonces.range(first..)) {
                if nonce != want {
                    break;
                }
                if let Some(p) = self.by_hash.get(hash) {
                    candidates.push(Candidate { hash: *hash, fee: p.tx.body.fee, seq: p.seq, sender: *sender, nonce });
                }
            }
        }
        fair_selection(&candidates, capacity).into_iter().filter_map(|i| self.by_hash.get(&candidates[i].hash).map(|p| p.tx.clone())).collect()
    }

    /// Drops one transaction (it can no longer execute).
    pub fn remove(&mut self, hash: &TxHash) -> bool {
        let Some(pending) = self.by_hash.remove(hash) else { return false };
        let sender = pending.tx.body.sender();
        if let Some(nonces) = self.by_sender.get_mut(&sender) {
            nonces.remove(&pending.tx.body.nonce);
            if nonces.is_empty() {
                self.by_sender.remove(&sender);
            }
        }
        true
    }

    /// Drops what a committed block included (its transactions and their hashes, in the same
    /// order) and whatever its senders can no longer use.
    pub fn prune(&mut self, committed: &[Tx], hashes: &[TxHash], committed_nonce: impl Fn(&Address) -> u64) {
        let mut senders = HashSet::new();
        for (tx, hash) in committed.iter().zip(hashes) {
            self.by_hash.remove(hash);
            senders.insert(tx.body.sender());
        }
        for sender in senders {
            let floor = committed_nonce(&sender);
            if let Some(nonces) = self.by_sender.get_mut(&sender) {
                let keep = nonces.split_off(&floor);
                for hash in nonces.values() {
                    self.by_hash.remove(hash);
                }
                *nonces = keep;
                nonces.retain(|_, hash| self.by_hash.contains_key(hash));
                if nonces.is_empty() {
                    self.by_sender.remove(&sender);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: u8, fee: u128, seq: u64) -> Candidate {
        Candidate { hash: TxHash([id; 32]), fee, seq, sender: Address([id; 20]), nonce: 0 }
    }

    fn fees_of(candidates: &[Candidate], picked: &[usize]) -> Vec<u128> {
        let mut fees: Vec<u128> = picked.iter().map(|&i| candidates[i].fee).collect();
        fees.sort_unstable();
        fees
    }

    #[test]
    fn twenty_candidates_ten_slots() {
        // Fees 1..=20 from distinct senders; arrival order is the reverse of fee order, so the
        // oldest have the highest fees and the "oldest" draw must reach past the high draw.
        let candidates: Vec<Candidate> = (1..=20u8).map(|f| candidate(f, u128::from(f), u64::from(20 - f))).collect();
        let picked = fair_selection(&candidates, 10);
        // high: 20, 19 · low: 1, 2 · median of 1..=20 is 10: the 5 nearest are 10, 9, 11, 8, 12
        // (ties at distance 2 by arrival: fee 12 arrived before fee 8) · oldest left: 18.
        assert_eq!(fees_of(&candidates, &picked), vec![1, 2, 8, 9, 10, 11, 12, 18, 19, 20]);
        // Block order is arrival order (oldest first).
        let seqs: Vec<u64> = picked.iter().map(|&i| candidates[i].seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted);
    }

    #[test]
    fn all_fit_when_few_wait() {
        let candidates: Vec<Candidate> = (1..=5u8).map(|f| candidate(f, 100, u64::from(f))).collect();
        assert_eq!(fair_selection(&candidates, 10), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn equal_fees_fall_back_to_arrival() {
        // 40 candidates, one fee: every draw ties on fee, so arrival order decides: the 10 oldest.
        let candidates: Vec<Candidate> = (0..40u8).map(|i| candidate(i, 7, u64::from(i))).collect();
        let picked = fair_selection(&candidates, 10);
        let seqs: Vec<u64> = picked.iter().map(|&i| candidates[i].seq).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<u64>>());
    }

    #[test]
    fn a_later_nonce_needs_its_predecessors() {
        // 15 slots: high 3, low 3, middle 8, oldest 1. Sender A's nonce 0 has the lowest fee and
        // its nonces 1 and 2 the highest, so all three are drawn and A's run is complete. Sender
        // B's nonce 1 is drawn by fee, but its nonce 0 (fee 50, far from the median, arrived last)
        // is not, so B's nonce 1 must be dropped: the block holds 14.
        let a = Address([200; 20]);
        let b = Address([201; 20]);
        let mut candidates = vec![
            Candidate { hash: TxHash([200; 32]), fee: 1, seq: 0, sender: a, nonce: 0 },
            Candidate { hash: TxHash([201; 32]), fee: 3000, seq: 1, sender: a, nonce: 1 },
            Candidate { hash: TxHash([202; 32]), fee: 3000, seq: 2, sender: a, nonce: 2 },
            Candidate { hash: TxHash([203; 32]), fee: 50, seq: 100, sender: b, nonce: 0 },
            Candidate { hash: TxHash([204; 32]), fee: 2000, seq: 4, sender: b, nonce: 1 },
        ];
        for i in 0..15u8 {
            candidates.push(candidate(i, 10 + u128::from(i), 10 + u64::from(i)));
        }
        let picked = fair_selection(&candidates, 15);
        assert_eq!(picked.len(), 14);
        let has = |hash: u8| picked.iter().any(|&i| candidates[i].hash == TxHash([hash; 32]));
        assert!(has(200) && has(201) && has(202), "A's run 0..=2 must be in: {picked:?}");
        assert!(!has(203) && !has(204), "B's nonce 1 without nonce 0 must be out: {picked:?}");
        // A's transactions come in nonce order.
        let a_nonces: Vec<u64> = picked.iter().filter(|&&i| candidates[i].sender == a).map(|&i| candidates[i].nonce).collect();
        assert_eq!(a_nonces, vec![0, 1, 2]);
    }
}
