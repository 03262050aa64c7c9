//! Streaming a payload into a slot's partition and verifying its SHA-256.

use sha2::{Digest, Sha256};
use tokio::fs::OpenOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{io_err, Slot, SlotAttrs, SlotDisk, SlotError};

/// Bytes moved per read while writing or hashing.
const CHUNK: usize = 256 * 1024;

/// Proof that a slot holds a payload of a given size and SHA-256: what [`SlotDisk::arm`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The slot checked.
    slot: Slot,
    /// Payload size in bytes.
    size: u64,
    /// The SHA-256 found, equal to the one expected.
    sha256: [u8; 32],
}

impl Verified {
    /// The slot that holds the payload.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The payload size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The payload's SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

impl SlotDisk {
    /// Writes bytes `offset..size` of a `size`-byte payload, read from `reader`, into `slot`.
    ///
    /// `reader` yields the payload from `offset` on (a resumed download gives
    /// `offset` = where the last attempt stopped, 0 for a fresh one). The slot
    /// must have been [invalidated](SlotDisk::invalidate) first, and the payload
    /// must fit in the partition; both are checked before any byte is written.
    /// Data is fsynced before returning, also when the stream fails: the
    /// error's `durable_until` / `got` is where to resume. A stream longer than
    /// `size` is an error. Returns `size`, the payload offset reached.
    pub async fn write_payload<R>(
        &self,
        slot: Slot,
        size: u64,
        offset: u64,
        mut reader: R,
    ) -> Result<u64, SlotError>
    where
        R: AsyncRead + Unpin,
    {
        let attrs = self.attrs(slot);
        if attrs != SlotAttrs::INVALID {
            return Err(SlotError::NotInvalidated { slot, attrs });
        }
        let info = self.info(slot);
        if size > info.size {
            return Err(SlotError::TooLarge {
                slot,
                size,
                capacity: info.size,
            });
        }
        if offset > size {
            return Err(SlotError::BadOffset { offset, size });
        }
        let path = self.path();
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(io_err("open", path))?;
        file.seek(std::io::SeekFrom::Start(info.offset + offset))
            .await
            .map_err(io_err("seek in", path))?;

        let mut buf = vec![0u8; CHUNK];
        let mut at = offset;
        while at < size {
            let want = usize::try_from(size - at).map_or(CHUNK, |left| left.min(CHUNK));
            let n = match reader.read(&mut buf[..want]).await {
                Ok(n) => n,
                Err(source) => {
                    sync(&mut file, path).await?;
                    return Err(SlotError::PayloadRead {
                        slot,
                        durable_until: at,
                        source,
                    });
                }
            };
            if n == 0 {
                sync(&mut file, path).await?;
                return Err(SlotError::PayloadShort {
                    slot,
                    got: at,
                    size,
                });
            }
            file.write_all(&buf[..n])
                .await
                .map_err(io_err("write the payload to", path))?;
            at += n as u64;
        }
        sync(&mut file, path).await?;
        // Anything after `size` means the declared size was wrong.
        let mut probe = [0u8; 1];
        match reader.read(&mut probe).await {
            Ok(0) => Ok(size),
            Ok(_) => Err(SlotError::PayloadLong { slot, size }),
            Err(source) => Err(SlotError::PayloadRead {
                slot,
                durable_until: size,
                source,
            }),
        }
    }

    /// Reads back the first `size` bytes of `slot` and checks their SHA-256 against `sha256_hex`.
    pub async fn verify(
        &self,
        slot: Slot,
        size: u64,
        sha256_hex: &str,
    ) -> Result<Verified, SlotError> {
        let expected = parse_hex(sha256_hex)?;
        let info = self.info(slot);
        if size > info.size {
            return Err(SlotError::TooLarge {
                slot,
                size,
                capacity: info.size,
            });
        }
        let path = self.path();
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io_err("open", path))?;
        file.seek(std::io::SeekFrom::Start(info.offset))
            .await
            .map_err(io_err("seek in", path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            let chunk = &mut buf[..want];
            file.read_exact(chunk)
                .await
                .map_err(io_err("read back the payload from", path))?;
            hasher.update(&chunk[..]);
            left -= want as u64;
        }
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != expected {
            return Err(SlotError::DigestMismatch {
                slot,
                expected: hex(&expected),
                actual: hex(&actual),
            });
        }
        Ok(Verified {
            slot,
            size,
            sha256: actual,
        })
    }
}

/// Flushes and fsyncs the payload written so far.
async fn sync(file: &mut tokio::fs::File, path: &std::path::Path) -> Result<(), SlotError> {
    file.flush()
        .await
        .map_err(io_err("write the payload to", path))?;
    file.sync_data().await.map_err(io_err("sync", path))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a 64-digit hex SHA-256 (either case, surrounding whitespace ignored).
fn parse_hex(s: &str) -> Result<[u8; 32], SlotError> {
    let bad = || SlotError::BadDigest(s.to_string());
    let t = s.trim().as_bytes();
    if t.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            // Both digits are < 16, so the byte fits.
            (Some(hi), Some(lo)) => *byte = (hi * 16 + lo) as u8,
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::image::test_image;

    /// A payload that is not all one byte value, so offsets matter.
    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    fn read_slot(disk: &SlotDisk, slot: Slot, len: usize) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(disk.path()).expect("open");
        f.seek(SeekFrom::Start(disk.info(slot).offset))
            .expect("seek");
        let mut out = vec![0u8; len];
        f.read_exact(&mut out).expect("read");
        out
    }

    #[tokio::test]
    async fn refuses_a_slot_not_invalidated() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        // USR-A is the booted, known-good slot.
        let data = payload(1000);
        let before = read_slot(&disk, Slot::A, 1000);
        let err = disk
            .write_payload(Slot::A, 1000, 0, &data[..])
            .await
            .expect_err("A is bootable");
        assert!(
            matches!(err, SlotError::NotInvalidated { slot: Slot::A, .. }),
            "{err}"
        );
        assert_eq!(read_slot(&disk, Slot::A, 1000), before, "no byte written");
        // A slot left armed (priority set) is refused as well.
        disk.set_attrs(
            Slot::B,
            SlotAttrs {
                priority: 2,
                tries: 1,
                successful: false,
            },
        )
        .expect("set");
        let err = disk
            .write_payload(Slot::B, 1000, 0, &data[..])
            .await
            .expect_err("B is armed");
        assert!(
            matches!(err, SlotError::NotInvalidated { slot: Slot::B, .. }),
            "{err}"
        );
        disk.invalidate(Slot::B).expect("invalidate");
        disk.write_payload(Slot::B, 1000, 0, &data[..])
            .await
            .expect("write after invalidate");
        assert_eq!(read_slot(&disk, Slot::B, 1000), data);
    }

    #[tokio::test]
    async fn resumes_at_an_offset() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.invalidate(Slot::B).expect("invalidate");
        let data = payload(700_000);
        // The first attempt breaks off after 300 000 bytes.
        let err = disk
            .write_payload(Slot::B, 700_000, 0, &data[..300_000])
            .await
            .expect_err("short");
        let got = match err {
            SlotError::PayloadShort { got, size, .. } => {
                assert_eq!(size, 700_000);
                got
            }
            other => panic!("unexpected {other}"),
        };
        assert_eq!(got, 300_000);
        let end = disk
            .write_payload(Slot::B, 700_000, got, &data[300_000..])
            .await
            .expect("resume");
        assert_eq!(end, 700_000);
        assert_eq!(read_slot(&disk, Slot::B, 700_000), data);
        disk.verify(Slot::B, 700_000, &sha(&data))
            .await
            .expect("verify");
    }

    #[tokio::test]
    async fn a_failing_stream_reports_where_to_resume() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.invalidate(Slot::B).expect("invalidate");
        let data = payload(4096);
        let broken = tokio::io::AsyncReadExt::chain(&data[..1000], tokio_test_reader_error());
        let err = disk
            .write_payload(Slot::B, 4096, 0, broken)
            .await
            .expect_err("broken");
        assert!(
            matches!(
                err,
                SlotError::PayloadRead {
                    durable_until: 1000,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// A reader whose every read fails.
    fn tokio_test_reader_error() -> impl AsyncRead + Unpin {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("connection reset")))
            }
        }
        Broken
    }

    #[tokio::test]
    async fn refuses_an_oversize_payload_before_writing() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.invalidate(Slot::B).expect("invalidate");
        let capacity = disk.info(Slot::B).size;
        let before = read_slot(&disk, Slot::B, 4096);
        let err = disk
            .write_payload(Slot::B, capacity + 1, 0, &payload(4096)[..])
            .await
            .expect_err("too large");
        assert!(matches!(err, SlotError::TooLarge { .. }), "{err}");
        assert_eq!(read_slot(&disk, Slot::B, 4096), before);
        // Exactly the partition size fits; the next partition is untouched.
        let a_before = read_slot(&disk, Slot::A, 16);
        let full = payload(usize::try_from(capacity).expect("fits"));
        disk.write_payload(Slot::B, capacity, 0, &full[..])
            .await
            .expect("full");
        assert_eq!(read_slot(&disk, Slot::A, 16), a_before);
        disk.verify(Slot::B, capacity, &sha(&full))
            .await
            .expect("verify");
        // A longer stream than declared, and an offset past the end.
        disk.invalidate(Slot::B).expect("invalidate");
        let err = disk
            .write_payload(Slot::B, 10, 0, &payload(11)[..])
            .await
            .expect_err("long");
        assert!(
            matches!(err, SlotError::PayloadLong { size: 10, .. }),
            "{err}"
        );
        let err = disk
            .write_payload(Slot::B, 10, 11, &payload(0)[..])
            .await
            .expect_err("offset");
        assert!(matches!(err, SlotError::BadOffset { .. }), "{err}");
    }

    #[tokio::test]
    async fn verify_reports_a_mismatch() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.invalidate(Slot::B).expect("invalidate");
        let data = payload(5000);
        disk.write_payload(Slot::B, 5000, 0, &data[..])
            .await
            .expect("write");
        let mut other = data.clone();
        other[4999] ^= 1;
        let err = disk
            .verify(Slot::B, 5000, &sha(&other))
            .await
            .expect_err("mismatch");
        match err {
            SlotError::DigestMismatch {
                slot,
                expected,
                actual,
            } => {
                assert_eq!(slot, Slot::B);
                assert_eq!(expected, sha(&other));
                assert_eq!(actual, sha(&data));
            }
            other => panic!("unexpected {other}"),
        }
        // Upper case and whitespace are accepted; garbage is not.
        let v = disk
            .verify(Slot::B, 5000, &format!(" {}\n", sha(&data).to_uppercase()))
            .await
            .expect("verify");
        assert_eq!(
            (v.slot(), v.size(), v.sha256_hex()),
            (Slot::B, 5000, sha(&data))
        );
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            let err = disk
                .verify(Slot::B, 5000, bad)
                .await
                .expect_err("bad digest");
            assert!(matches!(err, SlotError::BadDigest(_)), "{err}");
        }
        let too_big = disk.info(Slot::B).size + 1;
        let err = disk
            .verify(Slot::B, too_big, &sha(&data))
            .await
            .expect_err("too big");
        assert!(matches!(err, SlotError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn payload_futures_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let (_dir, path) = test_image();
        let disk = SlotDisk::open(&path).expect("open");
        send(&disk.write_payload(Slot::B, 0, 0, &b""[..]));
        send(&disk.verify(Slot::B, 0, ""));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..32).map(|i| i * 8).collect();
        let parsed = parse_hex(&hex(&bytes)).expect("parse");
        assert_eq!(parsed.to_vec(), bytes);
    }
}
