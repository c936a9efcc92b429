//! The redb backend: conformance, no plaintext in the file, rotation, wrong keys, tampering.

use crate::common::{alice, bob, entry, tx};
use crate::conformance;
use archive::{
    ARCHIVE_FILE, Archive, ArchiveConfig, ArchiveKeys, Error, KEYRING_FILE, RedbArchive,
};
use dag_core::Signer;
use pqc::{Keyring, MlDsa87, NtruParams};
use std::path::Path;
use std::sync::Arc;

fn open(dir: &Path) -> RedbArchive {
    RedbArchive::open_in_dir(dir).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn conformance_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&open(dir.path()), 1_750_000_000_000, false).await;
}

#[tokio::test]
async fn conformance_through_any_archive() {
    let dir = tempfile::tempdir().unwrap();
    let any = archive::AnyArchive::from(open(dir.path()));
    conformance::run(&any, 1_750_000_000_000, false).await;
}

#[tokio::test]
async fn stored_bytes_contain_no_plaintext_of_encrypted_fields() {
    let dir = tempfile::tempdir().unwrap();
    let payload = b"PLAINTEXT-PAYLOAD-MARKER-0123456789".repeat(4);
    let amount: u64 = 0x1122_3344_5566_7788;
    let t = tx(alice(), 77, amount, &payload);
    let signed = t.signed().clone();
    {
        let a = open(dir.path());
        a.put(entry(t.clone(), 1_750_000_000_000, &[]))
            .await
            .unwrap();
        // Same tx read back, to be sure the markers went in.
        assert_eq!(a.get(t.id()).await.unwrap().unwrap().signed, signed);
    }
    let bytes = std::fs::read(dir.path().join(ARCHIVE_FILE)).unwrap();
    // The tx id is stored in clear (it is the key): the scan must be able to find things.
    assert!(contains(&bytes, t.id().as_bytes()), "scan sanity check");
    let checks: [(&str, &[u8]); 7] = [
        ("payload", &payload[..16]),
        ("amount", &amount.to_le_bytes()),
        ("sender", signed.tx.sender.as_bytes()),
        ("receiver", signed.tx.receiver.as_bytes()),
        ("public key", &alice().public_key()[..32]),
        ("public key tail", &alice().public_key()[2000..2032]),
        ("signature", &signed.signature[..32]),
    ];
    for (what, needle) in checks {
        assert!(!contains(&bytes, needle), "{what} found in plaintext");
    }
    // The key ring file holds secrets, but never tx data.
    let ring = std::fs::read(dir.path().join(KEYRING_FILE)).unwrap();
    assert!(!contains(&ring, &payload[..16]));
}

#[tokio::test]
async fn rotation_keeps_old_records_readable() {
    let dir = tempfile::tempdir().unwrap();
    let ring_path = dir.path().join(KEYRING_FILE);
    let (t1, t2) = (
        tx(alice(), 100, 1, b"before"),
        tx(alice(), 101, 2, b"after"),
    );
    let (k1, k2);
    {
        let a = open(dir.path());
        k1 = a.keys().current_key_id();
        a.put(entry(t1.clone(), 1, &[])).await.unwrap();
        // Keep the ring as it was before rotation.
        std::fs::copy(&ring_path, dir.path().join("old.keyring")).unwrap();
        k2 = a.keys().rotate().unwrap();
        assert_ne!(k1, k2);
        a.put(entry(t2.clone(), 2, &[])).await.unwrap();
        assert_eq!(a.get(t1.id()).await.unwrap().unwrap().key_id, k1);
        assert_eq!(a.get(t2.id()).await.unwrap().unwrap().key_id, k2);
    }
    // Reopened: the rotated ring was saved; both records read.
    let a = open(dir.path());
    assert_eq!(a.keys().key_ids(), vec![k1, k2]);
    assert_eq!(a.keys().current_key_id(), k2);
    assert_eq!(&a.get(t1.id()).await.unwrap().unwrap().signed, t1.signed());
    assert_eq!(&a.get(t2.id()).await.unwrap().unwrap().signed, t2.signed());
    drop(a);

    // With the ring from before the rotation, the new record names an unknown key.
    let old_keys = Arc::new(ArchiveKeys::load(&dir.path().join("old.keyring")).unwrap());
    let a = RedbArchive::open(
        &dir.path().join(ARCHIVE_FILE),
        old_keys,
        ArchiveConfig::default(),
    )
    .unwrap();
    assert!(a.get(t1.id()).await.unwrap().is_some());
    match a.get(t2.id()).await {
        Err(Error::UnknownKey { tx_id, key_id }) => {
            assert_eq!((tx_id, key_id), (t2.id(), k2));
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_key_ring_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let t = tx(bob(), 200, 9, b"secret");
    open(dir.path())
        .put(entry(t.clone(), 1, &[]))
        .await
        .unwrap();
    let stranger = Arc::new(ArchiveKeys::new(
        Keyring::generate(NtruParams::default()).unwrap(),
    ));
    let a = RedbArchive::open(
        &dir.path().join(ARCHIVE_FILE),
        stranger,
        ArchiveConfig::default(),
    )
    .unwrap();
    assert!(matches!(a.get(t.id()).await, Err(Error::UnknownKey { .. })));
    // The blind index is keyed too: another ring finds nothing by sender.
    assert!(
        a.query_by_sender(bob().account_id(), 0..u64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A corrupt key ring file is a typed error, not a new ring.
    let ring_path = dir.path().join(KEYRING_FILE);
    let mut ring = std::fs::read(&ring_path).unwrap();
    ring[50] ^= 1;
    std::fs::write(&ring_path, &ring).unwrap();
    assert!(matches!(
        RedbArchive::open_in_dir(dir.path()),
        Err(Error::Keyring(e)) if matches!(*e, pqc::KemError::CorruptKeyring { .. })
    ));
}

#[tokio::test]
async fn tampered_file_bytes_never_decrypt_wrongly() {
    let dir = tempfile::tempdir().unwrap();
    let t = tx(alice(), 300, 12_345, b"tamper target payload");
    open(dir.path())
        .put(entry(t.clone(), 1, &[]))
        .await
        .unwrap();
    let path = dir.path().join(ARCHIVE_FILE);
    let good = std::fs::read(&path).unwrap();
    // Find the record: magic "CCAK" (wrapped key by reference), version (2: batch key),
    // then the tx id.
    let mut head = b"CCAK\x02".to_vec();
    head.extend_from_slice(t.id().as_bytes());
    let start = good
        .windows(head.len())
        .position(|w| w == head.as_slice())
        .expect("record in file");
    let len = t.signed().encode().len();
    let mut typed = 0;
    // Flip one byte at a time across the record (clear header, key reference, ciphertexts).
    for off in (37..len).step_by(len / 23) {
        let mut bad = good.clone();
        bad[start + off] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let a = match RedbArchive::open_in_dir(dir.path()) {
            Ok(a) => a,
            Err(_) => continue, // redb itself refused the file: also clean
        };
        match a.get(t.id()).await {
            Ok(Some(back)) => panic!("flip at +{off} decrypted to {:?}", back.id()),
            Ok(None) => {}
            Err(
                Error::Tampered { .. }
                | Error::CorruptRecord { .. }
                | Error::KeyUnwrap { .. }
                | Error::UnknownKey { .. }
                | Error::Redb { .. },
            ) => typed += 1,
            Err(e) => panic!("flip at +{off}: unexpected {e}"),
        }
    }
    assert!(typed > 10, "only {typed} flips reached the record");
    std::fs::write(&path, &good).unwrap();
    let back = open(dir.path()).get(t.id()).await.unwrap().unwrap();
    assert!(back.signed.verify(&MlDsa87).is_ok());
}
