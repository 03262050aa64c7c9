//! Reading a GPT with the `gpt` crate, and rewriting it crash-safely.
//!
//! The crate's own `GptDisk::write` writes both entry arrays before either
//! header, so a crash in between leaves no header matching its array; it
//! also packs the used entries to the front, renumbering partitions after a
//! gap. [`Table::write`] uses the crate's entry and header writers in an
//! order that always leaves one consistent copy for any reader that follows
//! the UEFI rule (use the backup when the primary is invalid), the crate
//! included, and keeps every entry at its own index:
//!
//! 1. backup entry array, backup header, fsync (the primary is untouched);
//! 2. the primary header is zeroed, fsync (readers now take the new backup);
//! 3. primary entry array, primary header, fsync.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Seek, SeekFrom, Write};
use std::path::Path;

use gpt::disk::LogicalBlockSize;
use gpt::header::{Header, HeaderBuilder, HeaderError};
use gpt::partition::Partition;
use gpt::{GptConfig, GptError};

use super::{io_err, SlotError};

/// The only entry size the `gpt` crate reads (it panics on others).
const ENTRY_SIZE: u32 = 128;
/// The most entries accepted (the usual table has 128).
const MAX_ENTRIES: u32 = 4096;

/// A GPT as read from a disk: headers and entries by partition number.
#[derive(Debug, Clone)]
pub(super) struct Table {
    /// Logical block size the GPT was found at.
    pub block_size: LogicalBlockSize,
    /// The primary header, if it is valid.
    pub primary: Option<Header>,
    /// The backup header, if it is valid.
    pub backup: Option<Header>,
    /// Entries by partition number (1-based), empty ones left out.
    pub partitions: BTreeMap<u32, Partition>,
}

impl Table {
    /// Reads the GPT of `file`, trying 512- and then 4096-byte sectors.
    pub fn read(file: &mut File, path: &Path) -> Result<Table, SlotError> {
        for block_size in [LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096] {
            // The crate asserts a 128-byte entry size: check it first.
            match gpt::header::read_header_from_arbitrary_device(file, block_size) {
                Ok(h) if h.part_size != ENTRY_SIZE => {
                    return Err(SlotError::Unsupported {
                        path: path.to_path_buf(),
                        reason: format!("entry size {} (only {ENTRY_SIZE})", h.part_size),
                    })
                }
                // The crate allocates the whole array: refuse absurd counts first.
                Ok(h) if h.num_parts > MAX_ENTRIES => {
                    return Err(SlotError::Unsupported {
                        path: path.to_path_buf(),
                        reason: format!("{} entries (at most {MAX_ENTRIES})", h.num_parts),
                    })
                }
                _ => {}
            }
            let config = GptConfig::new()
                .writable(false)
                .logical_block_size(block_size);
            match config.open_from_device(&mut *file) {
                Ok(disk) => {
                    return Ok(Table {
                        block_size,
                        primary: disk.primary_header().ok().cloned(),
                        backup: disk.backup_header().ok().cloned(),
                        partitions: disk
                            .partitions()
                            .iter()
                            .filter(|(_, p)| p.is_used())
                            .map(|(n, p)| (*n, p.clone()))
                            .collect(),
                    })
                }
                Err(e) if no_gpt_here(&e) => continue,
                Err(source) => {
                    return Err(SlotError::Gpt {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        Err(SlotError::NoGpt {
            path: path.to_path_buf(),
        })
    }

    /// Writes headers and entries to `file` in the crash-safe order described above.
    pub fn write(&mut self, file: &mut File, path: &Path) -> Result<(), SlotError> {
        let gpt_err = |source: GptError| SlotError::Gpt {
            path: path.to_path_buf(),
            source,
        };
        let lb = self.block_size;
        let (mut primary, mut backup) = self.headers().map_err(|e| gpt_err(e.into()))?;
        if primary.part_start == backup.part_start {
            return Err(SlotError::Unsupported {
                path: path.to_path_buf(),
                reason: "primary and backup share one entry array".into(),
            });
        }

        write_entries(file, &backup, &self.partitions, lb).map_err(io_err("write", path))?;
        backup
            .write_backup(file, lb)
            .map_err(|e| gpt_err(e.into()))?;
        file.sync_all().map_err(io_err("sync", path))?;

        let sector = vec![0u8; lb.as_usize()];
        let at = primary.current_lba.saturating_mul(lb.as_u64());
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.write_all(&sector))
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", path))?;

        write_entries(file, &primary, &self.partitions, lb).map_err(io_err("write", path))?;
        primary
            .write_primary(file, lb)
            .map_err(|e| gpt_err(e.into()))?;
        file.sync_all().map_err(io_err("sync", path))?;

        self.primary = Some(primary);
        self.backup = Some(backup);
        Ok(())
    }

    /// The headers to write: the valid ones as they are, a missing one rebuilt from the other.
    fn headers(&self) -> Result<(Header, Header), HeaderError> {
        let lb = self.block_size;
        match (&self.primary, &self.backup) {
            (Some(p), Some(b)) => Ok((p.clone(), b.clone())),
            (Some(p), None) => {
                let b = HeaderBuilder::from_header(p).primary(false).build(lb)?;
                Ok((p.clone(), b))
            }
            (None, Some(b)) => {
                let p = HeaderBuilder::from_header(b).primary(true).build(lb)?;
                Ok((p, b.clone()))
            }
            // Read never yields a table without a valid header.
            (None, None) => Err(HeaderError::InvalidGptSignature),
        }
    }
}

/// Whether an open error means "no GPT at this sector size" rather than a broken one.
fn no_gpt_here(e: &GptError) -> bool {
    match e {
        GptError::Header(HeaderError::InvalidGptSignature) => true,
        GptError::Header(HeaderError::Io(io)) | GptError::Io(io) => {
            io.kind() == ErrorKind::UnexpectedEof
        }
        _ => false,
    }
}

/// Writes the entry array `header` points at: every entry at its own index, the rest zero.
fn write_entries(
    file: &mut File,
    header: &Header,
    partitions: &BTreeMap<u32, Partition>,
    lb: LogicalBlockSize,
) -> std::io::Result<()> {
    let (start, size) = (header.part_start, header.part_size);
    Partition::write_zero_entries_to_device(file, 0, u64::from(header.num_parts), start, lb, size)?;
    for (&number, p) in partitions {
        if number == 0 || number > header.num_parts {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                format!("partition number {number} outside the table"),
            ));
        }
        p.write_to_device(file, u64::from(number - 1), start, lb, size)?;
    }
    Ok(())
}
