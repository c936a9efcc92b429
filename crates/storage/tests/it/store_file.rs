//! The redb store on a real file: survives reopening, and bytes corrupted in the file are
//! detected on read and never returned.

use storage::{ErasureConfig, Error, ShardStore, StoreConfig};

#[test]
fn reopen_keeps_shards_and_quota_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shards.redb");
    let shards = ErasureConfig::default().encode(&[3u8; 5000]).unwrap();
    let used = {
        let store = ShardStore::open(&path, StoreConfig::default()).unwrap();
        for s in &shards[..3] {
            store.put(s).unwrap();
        }
        store.used_bytes().unwrap()
    };
    let store = ShardStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(store.used_bytes().unwrap(), used);
    assert_eq!(
        store.list_shards(&shards[0].stripe_id()).unwrap(),
        vec![0, 1, 2]
    );
    assert_eq!(
        store.get(&shards[0].stripe_id(), 2).unwrap().unwrap(),
        shards[2]
    );
}

#[test]
fn bytes_flipped_in_the_file_are_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shards.redb");
    // A distinctive payload so its bytes can be found in the database file.
    let payload: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8 ^ 0xa5).collect();
    let shards = ErasureConfig::default().encode(&payload).unwrap();
    let target = &shards[1];
    {
        let store = ShardStore::open(&path, StoreConfig::default()).unwrap();
        store.put(target).unwrap();
    }
    let mut file = std::fs::read(&path).unwrap();
    let needle = &target.data[100..164];
    let mut flipped = 0;
    let mut i = 0;
    while let Some(pos) = file[i..].windows(needle.len()).position(|w| w == needle) {
        let at = i + pos + 10;
        file[at] ^= 0xff;
        flipped += 1;
        i = at + 1;
    }
    assert!(flipped > 0, "shard bytes not found in the file");
    std::fs::write(&path, &file).unwrap();
    let store = ShardStore::open(&path, StoreConfig::default()).unwrap();
    match store.get(&target.stripe_id(), 1) {
        Err(Error::CorruptOnDisk { index: 1, .. }) => {}
        other => panic!("corrupt shard was not refused: {other:?}"),
    }
}
