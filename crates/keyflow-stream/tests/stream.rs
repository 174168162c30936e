//! Round trips, every tamper case, seekable ranges, and the async API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use keyflow_core::{DataKey, KeyVersion, OsRng, Purpose, SecretKey, SecureRandom};
use keyflow_stream::{
    decrypt, decrypt_async, decrypt_slice, encrypt, encrypt_async, encrypt_slice, read_header,
    read_header_async, Decryptor, Encryptor, Metadata, Sealer, SeekableDecryptor, StreamError,
};
use proptest::prelude::*;

const SEG: usize = 64 * 1024;

fn key(purpose: &str, version: u32, byte: u8) -> DataKey {
    DataKey::derive(
        Purpose::new(purpose).unwrap(),
        KeyVersion::new(version).unwrap(),
        &SecretKey::from_slice(&[byte; 32]).unwrap(),
    )
    .unwrap()
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill(&mut v).unwrap();
    v
}

fn meta(size: Option<u64>) -> Metadata {
    Metadata {
        name: Some("payroll.csv".into()),
        mime_type: Some("text/csv".into()),
        size,
    }
}

fn seal(dk: &DataKey, data: &[u8], segment: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let sealer =
        Sealer::with_segment_size(dk, &meta(Some(data.len() as u64)), segment, &OsRng).unwrap();
    encrypt(&mut &data[..], &mut out, sealer).unwrap();
    out
}

fn open(dk: &DataKey, file: &[u8]) -> Result<Vec<u8>, StreamError> {
    let mut input = file;
    let h = read_header(&mut input)?;
    let opener = h.open(dk)?;
    let mut out = Vec::new();
    decrypt(input, &mut out, opener)?;
    Ok(out)
}

/// Decrypts through the `Read` impl (small reads), the way most callers would.
fn open_via_read(dk: &DataKey, file: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut input = file;
    let h = read_header(&mut input).map_err(std::io::Error::from)?;
    let mut d = Decryptor::new(input, h.open(dk).map_err(std::io::Error::from)?);
    let mut out = Vec::new();
    let mut chunk = [0u8; 1000];
    loop {
        let n = d.read(&mut chunk)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn header_len(file: &[u8]) -> usize {
    read_header(&mut &file[..]).unwrap().len()
}

#[test]
fn round_trips_at_segment_boundaries_and_a_large_random_size() {
    let dk = key("documents", 1, 1);
    let mut large = [0u8; 4];
    OsRng.fill(&mut large).unwrap();
    let large = 3 * SEG + (u32::from_be_bytes(large) as usize % (5 * SEG));
    for size in [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, large] {
        let data = random(size);
        let file = seal(&dk, &data, 64 * 1024);
        let n = size.div_ceil(SEG).max(1);
        assert_eq!(file.len(), header_len(&file) + size + 16 * n, "size {size}");
        assert_eq!(open(&dk, &file).unwrap(), data, "size {size}");
        assert_eq!(open_via_read(&dk, &file).unwrap(), data, "size {size}");
        // The Write adapter, fed in odd-sized pieces, produces a file of the same shape.
        let sealer = Sealer::new(&dk, &meta(None), &OsRng).unwrap();
        let mut w = Encryptor::new(Vec::new(), sealer).unwrap();
        for piece in data.chunks(7777) {
            w.write_all(piece).unwrap();
        }
        let (file2, total) = w.finish().unwrap();
        assert_eq!(total, size as u64);
        assert_eq!(open(&dk, &file2).unwrap(), data, "Encryptor, size {size}");
    }
}

/// A file of `n` full 64-byte segments plus a partial one, and its segment boundaries.
fn segmented(dk: &DataKey) -> (Vec<u8>, Vec<u8>, Vec<std::ops::Range<usize>>) {
    let data = random(64 * 4 + 10);
    let file = seal(dk, &data, 64);
    let h = header_len(&file);
    let mut segs = Vec::new();
    let mut at = h;
    while at < file.len() {
        let end = (at + 64 + 16).min(file.len());
        segs.push(at..end);
        at = end;
    }
    assert_eq!(segs.len(), 5);
    (data, file, segs)
}

fn assemble(file: &[u8], segs: &[std::ops::Range<usize>], order: &[usize]) -> Vec<u8> {
    let mut out = file[..segs[0].start].to_vec();
    for &i in order {
        out.extend_from_slice(&file[segs[i].clone()]);
    }
    out
}

#[test]
fn every_tamper_case_is_refused() {
    let dk = key("documents", 1, 2);
    let (data, file, segs) = segmented(&dk);
    assert_eq!(open(&dk, &file).unwrap(), data);
    let h = segs[0].start;
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "truncated inside a segment".into(),
            file[..segs[2].start + 30].to_vec(),
        ),
        (
            "truncated inside the last tag".into(),
            file[..file.len() - 1].to_vec(),
        ),
        (
            "truncated at a segment boundary".into(),
            file[..segs[3].end].to_vec(),
        ),
        ("truncated to the header".into(), file[..h].to_vec()),
        ("truncated inside the header".into(), file[..h - 1].to_vec()),
        (
            "segment dropped".into(),
            assemble(&file, &segs, &[0, 2, 3, 4]),
        ),
        (
            "last segment dropped".into(),
            assemble(&file, &segs, &[0, 1, 2, 3]),
        ),
        (
            "segments swapped".into(),
            assemble(&file, &segs, &[0, 2, 1, 3, 4]),
        ),
        (
            "segment duplicated".into(),
            assemble(&file, &segs, &[0, 1, 1, 2, 3, 4]),
        ),
        (
            "last segment duplicated".into(),
            assemble(&file, &segs, &[0, 1, 2, 3, 4, 4]),
        ),
        ("bytes appended".into(), [&file[..], b"x"].concat()),
        (
            "a whole segment appended".into(),
            [&file[..], &file[segs[1].clone()]].concat(),
        ),
    ];
    for (name, at) in [
        ("magic", 1),
        ("purpose", 11),
        ("key version", 10 + 9 + 3),
        ("segment size", 10 + 9 + 4 + 3),
        ("salt", 10 + 9 + 8 + 5),
        ("nonce prefix", 10 + 9 + 8 + 32 + 2),
        ("metadata", h - 20),
        ("metadata tag", h - 1),
        ("first segment", h + 5),
        ("middle segment tag", segs[2].end - 1),
        ("last segment", file.len() - 17),
    ] {
        let mut t = file.clone();
        t[at] ^= 0x04;
        cases.push((format!("bit flipped in {name}"), t));
    }
    // A segment from another file under the same key (same position) is refused too.
    let (_, other, other_segs) = segmented(&dk);
    let mut spliced = file[..segs[1].start].to_vec();
    spliced.extend_from_slice(&other[other_segs[1].clone()]);
    spliced.extend_from_slice(&file[segs[2].start..]);
    cases.push(("segment spliced from another file".into(), spliced));

    for (name, bad) in &cases {
        let r = open(&dk, bad);
        assert!(
            matches!(
                r,
                Err(StreamError::DecryptionFailed | StreamError::InvalidHeader)
            ),
            "{name}: {r:?}"
        );
        // Through Read, the error surfaces as an error, never as a short read.
        assert!(open_via_read(&dk, bad).is_err(), "{name} (Read)");
        // The seekable reader refuses it, at open or at the damaged segment.
        let mut input = &bad[..];
        let refused = match read_header(&mut input).and_then(|h| h.open(&dk)) {
            Err(_) => true,
            Ok(opener) => match SeekableDecryptor::new(Cursor::new(bad.clone()), opener) {
                Err(_) => true,
                Ok(mut s) => {
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).is_err() || all != data
                }
            },
        };
        assert!(refused, "{name} (seekable)");
    }
}

#[test]
fn no_unverified_plaintext_is_released() {
    let dk = key("documents", 1, 3);
    let (data, file, segs) = segmented(&dk);
    let mut t = file.clone();
    t[segs[2].start + 3] ^= 1;
    let mut input = &t[..];
    let h = read_header(&mut input).unwrap();
    let mut d = Decryptor::new(input, h.open(&dk).unwrap());
    let mut got = Vec::new();
    let err = loop {
        match d.next_segment() {
            Ok(Some(p)) => got.extend_from_slice(p),
            Ok(None) => panic!("tampered file accepted"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StreamError::DecryptionFailed));
    assert_eq!(got, data[..128], "exactly the two verified segments");
    assert!(d.next_segment().is_err(), "stays failed");
}

#[test]
fn wrong_key_purpose_or_version_is_refused() {
    let dk = key("documents", 1, 4);
    let file = seal(&dk, b"secret", 64);
    for other in [
        key("documents", 1, 5),
        key("documents", 2, 4),
        key("userData", 1, 4),
    ] {
        assert!(matches!(
            open(&other, &file),
            Err(StreamError::DecryptionFailed)
        ));
    }
    assert!(matches!(
        open(&dk, b"kf1:AQEI"),
        Err(StreamError::InvalidHeader)
    ));
    assert!(matches!(open(&dk, b""), Err(StreamError::InvalidHeader)));
}

#[test]
fn declared_size_must_match() {
    let dk = key("documents", 1, 6);
    for (declared, actual) in [(10u64, 9usize), (10, 11), (0, 1), (64, 65), (65, 64)] {
        let sealer = Sealer::with_segment_size(&dk, &meta(Some(declared)), 64, &OsRng).unwrap();
        let r = encrypt(&mut &random(actual)[..], &mut Vec::new(), sealer);
        assert!(
            matches!(r, Err(StreamError::SizeMismatch { .. })),
            "{declared} vs {actual}: {r:?}"
        );
    }
}

#[test]
fn seekable_reads_after_open_and_size_is_authenticated() {
    let dk = key("documents", 1, 7);
    let data = random(3 * SEG + 123);
    let file = seal(&dk, &data, 64 * 1024);
    let mut input = &file[..];
    let h = read_header(&mut input).unwrap();
    let mut s = SeekableDecryptor::new(Cursor::new(&file), h.open(&dk).unwrap()).unwrap();
    assert_eq!(s.size(), data.len() as u64);
    assert_eq!(
        s.read_range(SEG as u64 - 2, 5).unwrap(),
        data[SEG - 2..SEG + 3]
    );
    s.seek(SeekFrom::End(-4)).unwrap();
    let mut tail = Vec::new();
    s.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, data[data.len() - 4..]);
    assert!(s.read_range(data.len() as u64 - 1, 2).is_err());
    assert!(s.seek(SeekFrom::Current(-(data.len() as i64) - 1)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn seekable_ranges_are_exact(len in 0usize..2000, seg in 16u32..200, a in any::<u64>(), b in any::<u64>()) {
        let dk = key("documents", 1, 8);
        let data = random(len);
        let file = seal(&dk, &data, seg);
        let mut input = &file[..];
        let h = read_header(&mut input).unwrap();
        let mut s = SeekableDecryptor::new(Cursor::new(&file), h.open(&dk).unwrap()).unwrap();
        prop_assert_eq!(s.size(), len as u64);
        let (x, y) = ((a % (len as u64 + 1)) as usize, (b % (len as u64 + 1)) as usize);
        let (start, end) = (x.min(y), x.max(y));
        prop_assert_eq!(s.read_range(start as u64, end - start).unwrap(), &data[start..end]);
        // And via Seek + Read, in whatever pieces `read` returns.
        s.seek(SeekFrom::Start(start as u64)).unwrap();
        let mut got = vec![0u8; end - start];
        s.read_exact(&mut got).unwrap();
        prop_assert_eq!(&got[..], &data[start..end]);
    }

    #[test]
    fn round_trip_any_size_and_segment(len in 0usize..3000, seg in 16u32..300) {
        let dk = key("documents", 1, 9);
        let data = random(len);
        let file = seal(&dk, &data, seg);
        prop_assert_eq!(open(&dk, &file).unwrap(), data);
    }

    #[test]
    fn any_single_byte_change_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let dk = key("documents", 1, 10);
        let file = seal(&dk, &random(300), 64);
        let mut t = file.clone();
        let i = pos.index(t.len());
        t[i] ^= 1 << bit;
        prop_assert!(open(&dk, &t).is_err());
    }
}

/// An `AsyncRead` that returns data in small, uneven pieces.
struct Trickle<'a>(&'a [u8], usize);

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.1 = (self.1 * 7 + 3) % 5000 + 1;
        let n = self.1.min(self.0.len()).min(buf.remaining());
        buf.put_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn async_round_trip_and_interop_with_sync() {
    let dk = key("documents", 1, 11);
    for size in [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 77] {
        let data = random(size);
        let sealer = Sealer::new(&dk, &meta(Some(size as u64)), &OsRng).unwrap();
        let mut file = Vec::new();
        let n = encrypt_async(Trickle(&data, 0), &mut file, sealer)
            .await
            .unwrap();
        assert_eq!(n, size as u64);
        // Async output decrypts with the sync reader, and sync output with the async one.
        assert_eq!(open(&dk, &file).unwrap(), data);
        let sync_file = seal(&dk, &data, 64 * 1024);
        let mut r = Trickle(&sync_file, 0);
        let h = read_header_async(&mut r).await.unwrap();
        let mut out = Vec::new();
        decrypt_async(r, &mut out, h.open(&dk).unwrap())
            .await
            .unwrap();
        assert_eq!(out, data);
    }
    // Tampering is refused asynchronously too.
    let (_, file, segs) = segmented(&dk);
    let bad = assemble(&file, &segs, &[0, 1, 2, 3]);
    let mut r = Trickle(&bad, 0);
    let h = read_header_async(&mut r).await.unwrap();
    let r = decrypt_async(r, &mut Vec::new(), h.open(&dk).unwrap()).await;
    assert!(matches!(r, Err(StreamError::DecryptionFailed)));
}

#[test]
fn errors_through_io_can_be_recovered() {
    let e: std::io::Error = StreamError::DecryptionFailed.into();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(matches!(
        StreamError::from_io(e),
        StreamError::DecryptionFailed
    ));
    let e = std::io::Error::other("disk");
    assert!(matches!(StreamError::from_io(e), StreamError::Io(_)));
}

/// A `Read` that hands out a few bytes at a time (sizes vary), like a pipe.
struct SyncTrickle<'a>(&'a [u8], usize);

impl Read for SyncTrickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.1 = (self.1 * 7 + 3) % 23 + 1;
        let n = self.1.min(self.0.len()).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// The one-buffer writers (a read-ahead byte parked past the tag) produce exactly the
/// bytes of the `Write` adapter, whatever the reader's read sizes, at every boundary.
#[tokio::test]
async fn all_writers_produce_identical_files() {
    let dk = key("documents", 1, 12);
    let seg = 16usize;
    for size in [
        0,
        1,
        seg - 1,
        seg,
        seg + 1,
        2 * seg,
        2 * seg + 1,
        7 * seg + 5,
    ] {
        let data = random(size);
        let m = meta(Some(size as u64));
        let sealer = || Sealer::hazmat_from_parts(&dk, &m, 16, [3; 32], [4; 7]).unwrap();
        let mut via_write = Encryptor::new(Vec::new(), sealer()).unwrap();
        for piece in data.chunks(5) {
            via_write.write_all(piece).unwrap();
        }
        let (via_write, _) = via_write.finish().unwrap();
        let mut whole = Vec::new();
        encrypt(&mut &data[..], &mut whole, sealer()).unwrap();
        let mut trickled = Vec::new();
        encrypt(&mut SyncTrickle(&data, 0), &mut trickled, sealer()).unwrap();
        let mut via_async = Vec::new();
        encrypt_async(Trickle(&data, 0), &mut via_async, sealer())
            .await
            .unwrap();
        assert_eq!(whole, via_write, "size {size}");
        assert_eq!(trickled, via_write, "size {size}");
        assert_eq!(via_async, via_write, "size {size}");
        assert_eq!(open(&dk, &whole).unwrap(), data);
    }
}

/// Decrypts a whole file with [`decrypt_slice`].
fn open_slice(dk: &DataKey, file: &[u8]) -> Result<Vec<u8>, StreamError> {
    let mut input = file;
    let opener = read_header(&mut input)?.open(dk)?;
    let mut out = Vec::new();
    let n = decrypt_slice(input, &mut out, opener)?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

#[test]
fn slice_entry_points_match_streaming_byte_for_byte() {
    let dk = key("documents", 1, 13);
    for (seg, sizes) in [
        (16usize, vec![0, 1, 15, 16, 17, 32, 33, 7 * 16 + 5]),
        (SEG, vec![0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 77]),
    ] {
        for size in sizes {
            for declared in [Some(size as u64), None] {
                let data = random(size);
                let m = meta(declared);
                let sealer =
                    || Sealer::hazmat_from_parts(&dk, &m, seg as u32, [5; 32], [6; 7]).unwrap();
                let mut streamed = Vec::new();
                encrypt(&mut &data[..], &mut streamed, sealer()).unwrap();
                let mut sliced = Vec::new();
                let n = encrypt_slice(&data, &mut sliced, sealer()).unwrap();
                assert_eq!(n, size as u64);
                assert_eq!(sliced, streamed, "segment {seg}, size {size}");
                assert_eq!(open_slice(&dk, &sliced).unwrap(), data);
                assert_eq!(open(&dk, &sliced).unwrap(), data);
            }
        }
    }
}

#[test]
fn slice_size_mismatch_is_refused_before_writing() {
    let dk = key("documents", 1, 14);
    let data = random(40);
    for declared in [39u64, 41, 0] {
        let sealer = Sealer::with_segment_size(&dk, &meta(Some(declared)), 16, &OsRng).unwrap();
        let mut out = Vec::new();
        let err = encrypt_slice(&data, &mut out, sealer).unwrap_err();
        assert!(
            matches!(err, StreamError::SizeMismatch { declared: d, read: 40 } if d == declared),
            "{err:?}"
        );
        assert!(out.is_empty());
    }
}

#[test]
fn slice_decrypt_refuses_every_tamper_and_releases_only_verified_segments() {
    let dk = key("documents", 1, 15);
    let data = random(16 * 3 + 5);
    for declared in [Some(data.len() as u64), None] {
        let sealer = Sealer::with_segment_size(&dk, &meta(declared), 16, &OsRng).unwrap();
        let mut file = Vec::new();
        encrypt_slice(&data, &mut file, sealer).unwrap();
        let h = read_header(&mut &file[..]).unwrap().len();
        assert_eq!(open_slice(&dk, &file).unwrap(), data);
        // Every flipped bit after the header.
        for i in h..file.len() {
            let mut t = file.clone();
            t[i] ^= 0x10;
            assert!(open_slice(&dk, &t).is_err(), "flip at {i} accepted");
        }
        // Every truncation and a one-byte extension, a dropped, duplicated and
        // swapped segment.
        for cut in h..file.len() {
            assert!(open_slice(&dk, &file[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(open_slice(&dk, &longer).is_err());
        let segs: Vec<&[u8]> = file[h..].chunks(32).collect();
        for order in [
            vec![0, 1, 3],
            vec![0, 0, 1, 2, 3],
            vec![1, 0, 2, 3],
            vec![0, 1, 2],
        ] {
            let mut t = file[..h].to_vec();
            for i in order {
                t.extend_from_slice(segs[i]);
            }
            assert!(
                matches!(open_slice(&dk, &t), Err(StreamError::DecryptionFailed)),
                "reordered"
            );
        }
        // Nothing unverified reaches the writer: a bad second segment yields exactly
        // the first segment's plaintext.
        let mut t = file.clone();
        t[h + 32 + 3] ^= 1;
        let mut input = &t[..];
        let opener = read_header(&mut input).unwrap().open(&dk).unwrap();
        let mut out = Vec::new();
        assert!(decrypt_slice(input, &mut out, opener).is_err());
        assert_eq!(out, &data[..16]);
    }
}
