//! Cross-checks of pqc's ML-DSA-87 (aws-lc-rs) against fips204, an independent pure-Rust
//! FIPS 204 implementation: ours sign → theirs verify, theirs sign → ours verify, the same
//! seed gives the same keys, and both reject a flipped bit in the signature, the message or
//! the public key. On generated keys, on pinned seeds and on the pqcrypto fixture.

use crate::fixtures::fixture;
use dag_core::{SignatureVerifier, Signer};
use fips204::ml_dsa_87;
use fips204::traits::{KeyGen, SerDes, Signer as _, Verifier as _};
use pqc::{Keypair, MlDsa87, PUBLIC_KEY_LEN, SECRET_KEY_LEN, SIGNATURE_LEN};

/// Message sizes: empty, a short one, and about a real signed tx (7.3 KiB).
const SIZES: [usize; 3] = [0, 100, 7_300];

fn msg(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

fn their_pk(bytes: &[u8]) -> ml_dsa_87::PublicKey {
    let arr: [u8; PUBLIC_KEY_LEN] = bytes.try_into().expect("public key length");
    ml_dsa_87::PublicKey::try_from_bytes(arr).expect("fips204 parses the public key")
}

fn their_sk(bytes: &[u8]) -> ml_dsa_87::PrivateKey {
    let arr: [u8; SECRET_KEY_LEN] = bytes.try_into().expect("secret key length");
    ml_dsa_87::PrivateKey::try_from_bytes(arr).expect("fips204 parses the secret key")
}

fn their_verify(pk: &[u8], m: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(sig) else {
        return false;
    };
    their_pk(pk).verify(m, &sig, &[])
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let n = b.len();
    b[at % n] ^= 0x01;
    b
}

/// `sig` over `m` under `pk` verifies in both implementations, and every single-bit change of
/// signature, message or key is rejected by both.
fn check_both_ways(pk: &[u8], m: &[u8], sig: &[u8], case: &str) {
    assert_eq!(sig.len(), SIGNATURE_LEN, "{case}");
    MlDsa87
        .verify(pk, m, sig)
        .unwrap_or_else(|e| panic!("{case}: ours rejects: {e}"));
    assert!(their_verify(pk, m, sig), "{case}: fips204 rejects");
    for at in [0, 1, 37, 2_000, SIGNATURE_LEN - 1] {
        let bad = flip(sig, at);
        assert!(
            MlDsa87.verify(pk, m, &bad).is_err(),
            "{case}: ours, sig bit {at}"
        );
        assert!(!their_verify(pk, m, &bad), "{case}: fips204, sig bit {at}");
    }
    let bad_m = if m.is_empty() {
        vec![0]
    } else {
        flip(m, m.len() / 2)
    };
    assert!(
        MlDsa87.verify(pk, &bad_m, sig).is_err(),
        "{case}: ours, msg"
    );
    assert!(!their_verify(pk, &bad_m, sig), "{case}: fips204, msg");
    for at in [0, 40, PUBLIC_KEY_LEN - 1] {
        let bad = flip(pk, at);
        assert!(
            MlDsa87.verify(&bad, m, sig).is_err(),
            "{case}: ours, key bit {at}"
        );
        assert!(!their_verify(&bad, m, sig), "{case}: fips204, key bit {at}");
    }
}

/// Ours signs with `kp`; fips204 signs with the same secret key bytes; both signatures are
/// checked both ways.
fn check_pair(kp: &Keypair, secret: &[u8], case: &str) {
    let theirs = their_sk(secret);
    for (i, len) in SIZES.into_iter().enumerate() {
        let m = msg(len, i as u8);
        check_both_ways(
            kp.public_key(),
            &m,
            &kp.sign(&m),
            &format!("{case}, ours, {len} B"),
        );
        let sig = theirs.try_sign(&m, &[]).expect("fips204 signs");
        check_both_ways(
            kp.public_key(),
            &m,
            &sig,
            &format!("{case}, fips204, {len} B"),
        );
    }
}

#[test]
fn same_seed_same_keys_and_signatures_cross_verify() {
    for seed in [[0u8; 32], [0xA5; 32], *b"citychain ml-dsa-87 cross check!"] {
        let ours = Keypair::from_seed(&seed).unwrap();
        let (pk, sk) = ml_dsa_87::KG::keygen_from_seed(&seed);
        assert_eq!(
            ours.public_key(),
            pk.into_bytes().as_slice(),
            "seed {seed:02x?}"
        );
        let sk = sk.into_bytes();
        check_pair(&ours, &sk, &format!("seed {:02x}", seed[0]));
    }
}

#[test]
fn pinned_seed_gives_pinned_public_key() {
    // BLAKE3 of the ML-DSA-87 public key from the all-zero seed, pinned when the tests were
    // written (aws-lc-rs 1.19 and fips204 0.4.6 agreed on it).
    let kp = Keypair::from_seed(&[0u8; 32]).unwrap();
    assert_eq!(
        blake3::hash(kp.public_key()).to_hex().as_str(),
        PINNED_ZERO_SEED_PK_HASH
    );
}

const PINNED_ZERO_SEED_PK_HASH: &str =
    "284191563f7598673990d35be2d7286bd8bbdc92f062b9f03feb24601a423995";

#[test]
fn generated_keys_cross_verify() {
    // Keys from each side's own key generation.
    let ours = Keypair::generate();
    let theirs_sk_bytes = {
        // Our secret key bytes are not public: go through a key file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        ours.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        bytes[8..8 + SECRET_KEY_LEN].to_vec()
    };
    check_pair(&ours, &theirs_sk_bytes, "aws-lc keygen");

    let (pk, sk) = ml_dsa_87::KG::try_keygen().expect("fips204 keygen");
    let sk = sk.into_bytes();
    let kp = Keypair::from_bytes(&pk.into_bytes(), &sk).unwrap();
    assert!(kp.is_consistent());
    check_pair(&kp, &sk, "fips204 keygen");
}

#[test]
fn pqcrypto_fixture_cross_verifies() {
    let file = fixture("mldsa87-pqcrypto.key");
    let sk = &file[8..8 + SECRET_KEY_LEN];
    let pk = &file[8 + SECRET_KEY_LEN..8 + SECRET_KEY_LEN + PUBLIC_KEY_LEN];
    check_both_ways(
        pk,
        &fixture("mldsa87-pqcrypto.msg"),
        &fixture("mldsa87-pqcrypto.sig"),
        "pqcrypto fixture",
    );
    let kp = Keypair::from_bytes(pk, sk).unwrap();
    check_pair(&kp, sk, "pqcrypto fixture key");
}
