//! The Merkle math against a naive reference written straight from the
//! recursive definitions of RFC 6962 §2.1 over the leaf data, on random
//! trees; and every altered byte of a proof, root or leaf is refused.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use proptest::prelude::*;

use super::*;

/// `MTH(D)` computed from the entries themselves.
fn naive_mth(entries: &[Vec<u8>]) -> Hash {
    match entries.len() {
        0 => empty_root(),
        1 => leaf_hash(&entries[0]),
        n => {
            let k = naive_split(n);
            node_hash(&naive_mth(&entries[..k]), &naive_mth(&entries[k..]))
        }
    }
}

fn naive_split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// `PATH(m, D[n])`.
fn naive_path(m: usize, entries: &[Vec<u8>]) -> Vec<Hash> {
    let n = entries.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = naive_split(n);
    if m < k {
        let mut p = naive_path(m, &entries[..k]);
        p.push(naive_mth(&entries[k..]));
        p
    } else {
        let mut p = naive_path(m - k, &entries[k..]);
        p.push(naive_mth(&entries[..k]));
        p
    }
}

/// `SUBPROOF(m, D[n], b)`.
fn naive_subproof(m: usize, entries: &[Vec<u8>], whole: bool) -> Vec<Hash> {
    let n = entries.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![naive_mth(entries)]
        };
    }
    let k = naive_split(n);
    if m <= k {
        let mut p = naive_subproof(m, &entries[..k], whole);
        p.push(naive_mth(&entries[k..]));
        p
    } else {
        let mut p = naive_subproof(m - k, &entries[k..], false);
        p.push(naive_mth(&entries[..k]));
        p
    }
}

fn tree_of(entries: &[Vec<u8>]) -> MemoryTree {
    let mut t = MemoryTree::new();
    for e in entries {
        t.push(leaf_hash(e));
    }
    t
}

fn entries(n: usize, salt: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("entry {i} salt {salt}").into_bytes())
        .collect()
}

#[test]
fn known_answers() {
    // RFC 6962 empty root and a hand-computed two-leaf tree.
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let e = entries(2, 0);
    let t = tree_of(&e);
    assert_eq!(t.root(), node_hash(&leaf_hash(&e[0]), &leaf_hash(&e[1])));
    // The leaf hash domain-separates: SHA-256(0x00 ‖ "").
    assert_eq!(
        hex::encode(leaf_hash(b"")),
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    );
}

#[test]
fn frontier_from_reader_matches_incremental() {
    let e = entries(77, 3);
    let t = tree_of(&e);
    for size in 0..=77u64 {
        let f = Frontier::from_reader(&t, size).expect("frontier");
        assert_eq!(f.root(), naive_mth(&e[..size as usize]), "size {size}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn roots_and_proofs_agree_with_the_reference(n in 1usize..100, salt in any::<u8>(), pick in any::<u64>()) {
        let e = entries(n, salt);
        let t = tree_of(&e);
        let size = n as u64;
        prop_assert_eq!(t.root(), naive_mth(&e));
        prop_assert_eq!(root(&t, size).unwrap(), naive_mth(&e));

        // Inclusion, for one leaf in a tree of every size that contains it.
        let m = (pick % size) as usize;
        for sub in ((m + 1)..=n).step_by(1 + n / 24) {
            let proof = inclusion_proof(&t, m as u64, sub as u64).unwrap();
            prop_assert_eq!(&proof.path, &naive_path(m, &e[..sub]));
            let r = naive_mth(&e[..sub]);
            prop_assert!(verify_inclusion(&leaf_hash(&e[m]), &proof, &r).is_ok());
        }

        // Consistency from every older size.
        let new_root = naive_mth(&e);
        let olds: Vec<usize> = (0..=n).step_by(1 + n / 24).chain([n - 1, n]).collect();
        for old in olds {
            let proof = consistency_proof(&t, old as u64, size).unwrap();
            let expected = if old == 0 || old == n { Vec::new() } else { naive_subproof(old, &e, true) };
            prop_assert_eq!(&proof.path, &expected);
            prop_assert!(verify_consistency(&proof, &naive_mth(&e[..old]), &new_root).is_ok());
        }
    }

    #[test]
    fn any_altered_byte_is_refused(n in 2usize..70, salt in any::<u8>(), pick in any::<u64>(), old_pick in any::<u64>()) {
        let e = entries(n, salt);
        let t = tree_of(&e);
        let size = n as u64;
        let r = t.root();
        let m = pick % size;
        let leaf = leaf_hash(&e[m as usize]);
        let proof = inclusion_proof(&t, m, size).unwrap();
        prop_assert!(verify_inclusion(&leaf, &proof, &r).is_ok());
        for i in 0..proof.path.len() {
            for byte in 0..32 {
                let mut bad = proof.clone();
                bad.path[i][byte] ^= 0x01;
                prop_assert!(verify_inclusion(&leaf, &bad, &r).is_err());
            }
        }
        for byte in 0..32 {
            let mut bad_root = r;
            bad_root[byte] ^= 0x80;
            prop_assert!(verify_inclusion(&leaf, &proof, &bad_root).is_err());
            let mut bad_leaf = leaf;
            bad_leaf[byte] ^= 0x80;
            prop_assert!(verify_inclusion(&bad_leaf, &proof, &r).is_err());
        }
        // A proof for one position does not prove another, nor another size.
        let mut moved = proof.clone();
        moved.leaf_index = (m + 1) % size;
        prop_assert!(verify_inclusion(&leaf, &moved, &r).is_err());
        // (A changed tree_size alone may still verify: the size is bound to
        // the root by the signed checkpoint, not by the path.)
        let mut shortened = proof.clone();
        shortened.path.pop();
        prop_assert!(verify_inclusion(&leaf, &shortened, &r).is_err());

        let old = 1 + old_pick % (size - 1);
        let old_root = root(&t, old).unwrap();
        let cp = consistency_proof(&t, old, size).unwrap();
        prop_assert!(verify_consistency(&cp, &old_root, &r).is_ok());
        for i in 0..cp.path.len() {
            for byte in 0..32 {
                let mut bad = cp.clone();
                bad.path[i][byte] ^= 0x01;
                prop_assert!(verify_consistency(&bad, &old_root, &r).is_err());
            }
        }
        for byte in 0..32 {
            let mut bad_old = old_root;
            bad_old[byte] ^= 0x01;
            prop_assert!(verify_consistency(&cp, &bad_old, &r).is_err());
            let mut bad_new = r;
            bad_new[byte] ^= 0x01;
            prop_assert!(verify_consistency(&cp, &old_root, &bad_new).is_err());
        }
        let mut truncated = cp.clone();
        truncated.path.pop();
        prop_assert!(verify_consistency(&truncated, &old_root, &r).is_err());
    }
}
