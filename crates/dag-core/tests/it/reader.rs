//! The `Reader`/`Writer` primitives every wire type is built on: what each call consumes
//! (position and remaining move together), little-endian integers, and length prefixes
//! checked against their maximum before any byte is taken.

use dag_core::{DecodeError, Reader, Writer};

#[test]
fn position_and_remaining_track_every_read() {
    let mut w = Writer::default();
    w.u8(1)
        .u16(2)
        .u32(3)
        .i32(-4)
        .u64(5)
        .raw(&[6; 32])
        .bytes_u8(b"ab");
    let bytes = w.finish();
    assert_eq!(bytes.len(), 1 + 2 + 4 + 4 + 8 + 32 + 1 + 2);
    let mut r = Reader::new(&bytes);
    let check = |r: &Reader<'_>, pos: usize| {
        assert_eq!(r.position(), pos);
        assert_eq!(r.remaining(), bytes.len() - pos);
    };
    check(&r, 0);
    assert_eq!(r.u8("a").unwrap(), 1);
    check(&r, 1);
    assert_eq!(r.u16("b").unwrap(), 2);
    check(&r, 3);
    assert_eq!(r.u32("c").unwrap(), 3);
    check(&r, 7);
    assert_eq!(r.i32("d").unwrap(), -4);
    check(&r, 11);
    assert_eq!(r.u64("e").unwrap(), 5);
    check(&r, 19);
    assert_eq!(r.bytes32("f").unwrap(), [6; 32]);
    check(&r, 51);
    assert_eq!(r.bytes_u8("g", 2).unwrap(), b"ab");
    check(&r, 54);
    r.finish().unwrap();
}

#[test]
fn a_failed_read_consumes_nothing_and_names_its_field() {
    let bytes = [3u8, 0, 0];
    let mut r = Reader::new(&bytes);
    // Length 3 over a maximum of 2: refused before taking a byte of the body.
    assert!(matches!(
        r.bytes_u8("name", 2),
        Err(DecodeError::TooLong {
            field: "name",
            len: 3,
            max: 2
        })
    ));
    let mut r = Reader::new(&bytes);
    assert!(matches!(
        r.bytes_u8("name", 8),
        Err(DecodeError::Truncated {
            field: "name",
            needed: 3,
            had: 2
        })
    ));
    assert_eq!(r.position(), 1, "only the length byte was taken");
    assert!(matches!(
        Reader::new(&bytes).finish(),
        Err(DecodeError::TrailingBytes(3))
    ));
}
