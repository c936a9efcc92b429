//! Pinned fixtures written by the pqcrypto backend (commit "pqc: pin fixtures written by
//! the pqcrypto backend"): an ML-DSA-87 key file, a message and its signature, and an NTRU
//! key ring with data keys wrapped under it. Whatever backend pqc uses, these must keep
//! loading, verifying and unwrapping: node key files and archive records on disk depend on it.

use dag_core::{SignatureVerifier, Signer};
use pqc::{DataKey, Kem, Keypair, Keyring, MlDsa87, NtruParams, SIGNATURE_LEN, WrappedKey};
use std::path::PathBuf;

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The data key wrapped in the fixtures.
const DATA_KEY: &[u8; 32] = b"citychain fixture data key 32 B!";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn old_key_file_loads_and_old_signature_verifies() {
    let kp = Keypair::load(&fixture_path("mldsa87-pqcrypto.key")).unwrap();
    let pub_hex = String::from_utf8(fixture("mldsa87-pqcrypto.key.pub")).unwrap();
    assert_eq!(hex(kp.public_key()), pub_hex.trim());

    let msg = fixture("mldsa87-pqcrypto.msg");
    let sig = fixture("mldsa87-pqcrypto.sig");
    assert_eq!(sig.len(), SIGNATURE_LEN);
    MlDsa87.verify(kp.public_key(), &msg, &sig).unwrap();

    // Rejections: a flipped bit in the signature, the message or the key.
    let mut bad = sig.clone();
    bad[100] ^= 1;
    assert!(MlDsa87.verify(kp.public_key(), &msg, &bad).is_err());
    let mut bad = msg.clone();
    bad[0] ^= 1;
    assert!(MlDsa87.verify(kp.public_key(), &bad, &sig).is_err());
    let mut bad = kp.public_key().to_vec();
    bad[7] ^= 1;
    assert!(MlDsa87.verify(&bad, &msg, &sig).is_err());
}

#[test]
fn old_key_signs_what_its_public_key_verifies() {
    let kp = Keypair::load(&fixture_path("mldsa87-pqcrypto.key")).unwrap();
    let pub_hex = String::from_utf8(fixture("mldsa87-pqcrypto.key.pub")).unwrap();
    let msg = b"signed after the backend change";
    let sig = kp.sign(msg);
    assert_eq!(sig.len(), SIGNATURE_LEN);
    // Verify under the public key as it was published, not as the key pair reports it.
    let published: Vec<u8> = (0..pub_hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&pub_hex[i..i + 2], 16).unwrap())
        .collect();
    MlDsa87.verify(&published, msg, &sig).unwrap();
}

#[test]
fn old_key_ring_and_wrapped_keys_still_unwrap() {
    let ring = Keyring::load(&fixture_path("ntru.keyring")).unwrap();
    assert_eq!(ring.key_ids().len(), 2);
    assert_eq!(ring.current().params(), NtruParams::Hrss701);
    let dk = DataKey::from_bytes(*DATA_KEY);
    for name in ["ntru-hps4096821.wrapped", "ntru-hrss701.wrapped"] {
        let w = WrappedKey::decode(&fixture(name)).unwrap();
        assert_eq!(ring.unwrap(&w).unwrap(), dk, "{name}");
        assert_eq!(w.encode(), fixture(name), "{name} re-encodes byte for byte");
    }
    assert_eq!(
        dk.open(b"fixture", &fixture("ntru.sealed")).unwrap(),
        b"sealed before the KEM change"
    );
}

#[test]
fn old_wrapped_keys_rewrap_to_ml_kem() {
    let mut ring = Keyring::load(&fixture_path("ntru.keyring")).unwrap();
    ring.rotate_to(Kem::MlKem1024).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring");
    ring.save(&path).unwrap();
    let ring = Keyring::load(&path).unwrap();
    let dk = DataKey::from_bytes(*DATA_KEY);
    for name in ["ntru-hps4096821.wrapped", "ntru-hrss701.wrapped"] {
        let old = WrappedKey::decode(&fixture(name)).unwrap();
        assert!(matches!(old.kem(), Kem::Ntru(_)), "{name}");
        let (got, new) = ring.rewrap(&old).unwrap().expect("moved to ML-KEM");
        assert_eq!(got, dk);
        assert_eq!(new.kem(), Kem::MlKem1024);
        assert_eq!(
            ring.unwrap(&WrappedKey::decode(&new.encode()).unwrap())
                .unwrap(),
            dk
        );
    }
}
