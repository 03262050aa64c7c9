//! [`SlotDisk`]: a disk's two OS slots, the boot choice and the attribute steps
//! of an update.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::gptprio;
use super::table::Table;
use super::{io_err, Slot, SlotAttrs, SlotError, Verified, USR_TYPE_GUID};

/// Where a slot lives on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInfo {
    /// Which slot.
    pub slot: Slot,
    /// GPT partition number (1-based, as in `/dev/sda3`).
    pub number: u32,
    /// The partition's unique GUID (what `mount.usr=PARTUUID=` names).
    pub part_guid: uuid::Uuid,
    /// Byte offset of the partition on the disk.
    pub offset: u64,
    /// Size of the partition in bytes.
    pub size: u64,
}

/// An open disk with its two OS slots; every attribute change is written through at once.
///
/// The GPT is read once at [`SlotDisk::open`]; this handle assumes it is the
/// only writer of the table while it lives. The attribute methods do
/// blocking IO (a few small writes and fsyncs).
#[derive(Debug)]
pub struct SlotDisk {
    /// The disk's path.
    path: PathBuf,
    /// Read-write handle used for the GPT.
    file: File,
    /// The table as last read or written.
    table: Table,
    /// USR-A and USR-B, indexed by [`Slot::index`].
    slots: [SlotInfo; 2],
}

impl SlotDisk {
    /// Opens a block device or disk image read-write and finds USR-A and USR-B in its GPT.
    pub fn open(path: impl AsRef<Path>) -> Result<SlotDisk, SlotError> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let table = Table::read(&mut file, &path)?;
        let slots = [find(&table, &path, Slot::A)?, find(&table, &path, Slot::B)?];
        Ok(SlotDisk {
            path,
            file,
            table,
            slots,
        })
    }

    /// The disk's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The logical block (sector) size the GPT uses, in bytes.
    pub fn block_size(&self) -> u64 {
        self.table.block_size.as_u64()
    }

    /// Where `slot` lives.
    pub fn info(&self, slot: Slot) -> SlotInfo {
        self.slots[slot.index()]
    }

    /// The slot whose partition GUID is `guid` (e.g. from `mount.usr=PARTUUID=`).
    pub fn slot_by_guid(&self, guid: uuid::Uuid) -> Option<Slot> {
        self.slots
            .iter()
            .find(|s| s.part_guid == guid)
            .map(|s| s.slot)
    }

    /// The current attributes of `slot`.
    pub fn attrs(&self, slot: Slot) -> SlotAttrs {
        let number = self.slots[slot.index()].number;
        // `open` found the slot in this table and entries are never removed.
        let flags = self.table.partitions.get(&number).map_or(0, |p| p.flags);
        SlotAttrs::from_flags(flags)
    }

    /// Writes `attrs` for `slot` (low level: the update steps below keep the invariants).
    pub fn set_attrs(&mut self, slot: Slot, attrs: SlotAttrs) -> Result<(), SlotError> {
        self.write_attrs(&[(slot, attrs)])
    }

    /// Makes the boot choice of GRUB's `gptprio.next` and writes the spent try back.
    ///
    /// Returns the slot that boots. On a real host the bootloader does this;
    /// on a test host the agent calls it at start-up in its place.
    pub fn boot(&mut self) -> Result<Slot, SlotError> {
        let mut order = Slot::ALL.map(|s| (s, self.attrs(s)));
        order.sort_by_key(|(s, _)| self.slots[s.index()].number);
        let choice = gptprio::choose(&order).ok_or_else(|| SlotError::NoBootableSlot {
            path: self.path.clone(),
            a: self.attrs(Slot::A),
            b: self.attrs(Slot::B),
        })?;
        if choice.spends_try {
            self.write_attrs(&[(choice.slot, choice.attrs)])?;
        }
        Ok(choice.slot)
    }

    /// Makes `slot` unbootable (priority 0, tries 0, not successful) before it is written.
    ///
    /// Refused when the other slot cannot boot, since nothing would boot then.
    pub fn invalidate(&mut self, slot: Slot) -> Result<(), SlotError> {
        self.require_fallback("invalidate", slot)?;
        self.write_attrs(&[(slot, SlotAttrs::INVALID)])
    }

    /// Arms the verified slot for the next boot: priority 2 with one try, the other slot 1.
    ///
    /// This is what `cgpt prioritize` leaves with two slots: the new slot is
    /// tried once; if it never becomes healthy, the other slot (priority 1)
    /// boots after it. Refused when the other slot cannot boot, so an update
    /// never leaves a disk without a fallback. Both entries change in one
    /// table write, so a crash leaves either the old or the new state.
    pub fn arm(&mut self, verified: Verified) -> Result<(), SlotError> {
        let slot = verified.slot();
        self.require_fallback("arm", slot)?;
        let armed = SlotAttrs {
            priority: 2,
            tries: 1,
            successful: false,
        };
        let other = SlotAttrs {
            priority: 1,
            ..self.attrs(slot.other())
        };
        self.write_attrs(&[(slot, armed), (slot.other(), other)])
    }

    /// Marks the booted `slot` good after its health check: successful, no tries left.
    pub fn mark_successful(&mut self, slot: Slot) -> Result<(), SlotError> {
        let attrs = SlotAttrs {
            tries: 0,
            successful: true,
            ..self.attrs(slot)
        };
        self.write_attrs(&[(slot, attrs)])
    }

    /// Gives up on `slot` after a failed health check: priority 0, so the other slot boots next.
    ///
    /// Refused when the other slot cannot boot.
    pub fn roll_back(&mut self, slot: Slot) -> Result<(), SlotError> {
        self.require_fallback("roll back", slot)?;
        let attrs = SlotAttrs {
            priority: 0,
            ..self.attrs(slot)
        };
        self.write_attrs(&[(slot, attrs)])
    }

    /// Errors unless the other slot than `slot` is bootable.
    fn require_fallback(&self, action: &'static str, slot: Slot) -> Result<(), SlotError> {
        let other = slot.other();
        let attrs = self.attrs(other);
        if attrs.bootable() {
            Ok(())
        } else {
            Err(SlotError::NoFallback {
                action,
                slot,
                other,
                attrs,
            })
        }
    }

    /// Applies `changes` to the entries and rewrites the table once; memory follows only on success.
    fn write_attrs(&mut self, changes: &[(Slot, SlotAttrs)]) -> Result<(), SlotError> {
        let mut table = self.table.clone();
        for &(slot, attrs) in changes {
            let number = self.slots[slot.index()].number;
            if let Some(p) = table.partitions.get_mut(&number) {
                p.flags = attrs.apply_to(p.flags);
            }
        }
        table.write(&mut self.file, &self.path)?;
        self.table = table;
        Ok(())
    }
}

/// Finds `slot` in `table` by label, checking it is unique and of the usr type.
fn find(table: &Table, path: &Path, slot: Slot) -> Result<SlotInfo, SlotError> {
    let mut found = table
        .partitions
        .iter()
        .filter(|(_, p)| p.name == slot.label());
    let (number, p) = found.next().ok_or_else(|| SlotError::MissingSlot {
        path: path.to_path_buf(),
        slot,
    })?;
    if found.next().is_some() {
        return Err(SlotError::DuplicateSlot {
            path: path.to_path_buf(),
            slot,
        });
    }
    if p.part_type_guid.guid != USR_TYPE_GUID {
        return Err(SlotError::WrongSlotType {
            path: path.to_path_buf(),
            slot,
            found: p.part_type_guid.guid,
        });
    }
    let bad = |e: std::io::Error| SlotError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("{slot}: {e}"),
    };
    Ok(SlotInfo {
        slot,
        number: *number,
        part_guid: p.part_guid,
        offset: p.bytes_start(table.block_size).map_err(bad)?,
        size: p.bytes_len(table.block_size).map_err(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::image::test_image;
    use crate::slots::ImageLayout;

    #[test]
    fn finds_both_slots() {
        let (_dir, path) = test_image();
        let disk = SlotDisk::open(&path).expect("open");
        let (a, b) = (disk.info(Slot::A), disk.info(Slot::B));
        assert_eq!((a.number, b.number), (3, 4));
        assert_eq!(a.size, ImageLayout::small().usr_size);
        assert!(b.offset >= a.offset + a.size);
        assert_eq!(disk.slot_by_guid(b.part_guid), Some(Slot::B));
        assert_eq!(disk.attrs(Slot::A), SlotAttrs::new(1, 0, true));
        assert_eq!(disk.attrs(Slot::B), SlotAttrs::INVALID);
        assert_eq!(disk.block_size(), 512);
    }

    #[test]
    fn a_file_without_gpt_is_no_gpt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blank.img");
        std::fs::write(&path, vec![0u8; 1 << 20]).expect("write");
        let err = SlotDisk::open(&path).expect_err("no gpt");
        assert!(matches!(err, SlotError::NoGpt { .. }), "{err}");
        std::fs::write(&path, b"").expect("write");
        let err = SlotDisk::open(&path).expect_err("no gpt");
        assert!(matches!(err, SlotError::NoGpt { .. }), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let err = SlotDisk::open("/nonexistent/disk.img").expect_err("missing");
        assert!(matches!(err, SlotError::Io { action: "open", .. }), "{err}");
    }

    /// Rewrites partition `number`'s name or type with the crate, as another tool would.
    fn edit(path: &Path, number: u32, f: impl FnOnce(&mut gpt::partition::Partition)) {
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .open(path)
            .expect("gpt open");
        let mut parts = disk.partitions().clone();
        f(parts.get_mut(&number).expect("partition"));
        disk.update_partitions(parts).expect("update");
        disk.write().expect("gpt write");
    }

    #[test]
    fn a_missing_slot_is_named() {
        let (_dir, path) = test_image();
        edit(&path, 4, |p| p.name = "USR-C".into());
        let err = SlotDisk::open(&path).expect_err("missing B");
        assert!(
            matches!(err, SlotError::MissingSlot { slot: Slot::B, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_duplicate_slot_is_refused() {
        let (_dir, path) = test_image();
        edit(&path, 4, |p| p.name = "USR-A".into());
        let err = SlotDisk::open(&path).expect_err("two A");
        assert!(
            matches!(err, SlotError::DuplicateSlot { slot: Slot::A, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_slot_of_another_type_is_refused() {
        let (_dir, path) = test_image();
        edit(&path, 3, |p| {
            p.part_type_guid = gpt::partition_types::LINUX_FS
        });
        let err = SlotDisk::open(&path).expect_err("wrong type");
        assert!(
            matches!(err, SlotError::WrongSlotType { slot: Slot::A, .. }),
            "{err}"
        );
    }

    #[test]
    fn writes_persist_and_keep_other_flag_bits() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        // A UEFI "required" bit and a high bit outside the slot fields.
        let mut table = disk.table.clone();
        let number = disk.info(Slot::B).number;
        if let Some(p) = table.partitions.get_mut(&number) {
            p.flags |= 1 | (1 << 60);
        }
        table.write(&mut disk.file, &path).expect("write");
        let mut disk = SlotDisk::open(&path).expect("reopen");
        disk.set_attrs(Slot::B, SlotAttrs::new(9, 4, true))
            .expect("set");
        let disk = SlotDisk::open(&path).expect("reopen");
        assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(9, 4, true));
        let flags = disk.table.partitions.get(&number).map(|p| p.flags);
        assert_eq!(
            flags,
            Some(SlotAttrs::new(9, 4, true).apply_to(1 | (1 << 60)))
        );
    }

    #[test]
    fn both_headers_are_valid_after_a_write() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.set_attrs(Slot::B, SlotAttrs::new(3, 2, false))
            .expect("set");
        let g = gpt::GptConfig::new()
            .only_valid_headers(true)
            .open(&path)
            .expect("both headers valid");
        let b = g.partitions().get(&4).expect("USR-B");
        assert_eq!(SlotAttrs::from_flags(b.flags), SlotAttrs::new(3, 2, false));
        // Entries keep their numbers: ROOT is still partition 9.
        assert_eq!(
            g.partitions().get(&9).map(|p| p.name.as_str()),
            Some("ROOT")
        );
    }

    #[test]
    fn a_lost_primary_header_falls_back_to_the_backup_and_is_repaired() {
        use std::io::{Seek, SeekFrom, Write};
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.set_attrs(Slot::B, SlotAttrs::new(2, 1, false))
            .expect("set");
        // A crash right after step 2 of the write: primary header zeroed.
        let mut f = OpenOptions::new().write(true).open(&path).expect("open");
        f.seek(SeekFrom::Start(512)).expect("seek");
        f.write_all(&[0u8; 512]).expect("zero");
        drop(f);
        let mut disk = SlotDisk::open(&path).expect("opens from the backup");
        assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(2, 1, false));
        assert!(disk.table.primary.is_none());
        disk.set_attrs(Slot::B, SlotAttrs::new(2, 0, true))
            .expect("set");
        gpt::GptConfig::new()
            .only_valid_headers(true)
            .open(&path)
            .expect("primary repaired");
    }

    #[test]
    fn invalidate_refuses_to_leave_nothing_bootable() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        let err = disk
            .invalidate(Slot::A)
            .expect_err("A is the only bootable slot");
        assert!(matches!(err, SlotError::NoFallback { .. }), "{err}");
        assert_eq!(disk.attrs(Slot::A), SlotAttrs::new(1, 0, true));
        disk.invalidate(Slot::B).expect("B");
    }

    #[test]
    fn roll_back_refuses_without_fallback_and_otherwise_zeroes_priority() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        let err = disk.roll_back(Slot::A).expect_err("no fallback");
        assert!(matches!(err, SlotError::NoFallback { .. }), "{err}");
        disk.set_attrs(Slot::B, SlotAttrs::new(2, 0, true))
            .expect("set");
        disk.roll_back(Slot::B).expect("roll back");
        assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(0, 0, true));
        assert_eq!(disk.boot().expect("boot"), Slot::A);
    }

    #[test]
    fn no_bootable_slot_is_an_error() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.set_attrs(Slot::A, SlotAttrs::new(1, 0, false))
            .expect("set");
        let err = disk.boot().expect_err("nothing bootable");
        assert!(matches!(err, SlotError::NoBootableSlot { .. }), "{err}");
    }

    #[test]
    fn boot_spends_tries_until_the_slot_falls_back() {
        let (_dir, path) = test_image();
        let mut disk = SlotDisk::open(&path).expect("open");
        disk.set_attrs(Slot::B, SlotAttrs::new(2, 2, false))
            .expect("set");
        assert_eq!(disk.boot().expect("boot"), Slot::B);
        assert_eq!(
            SlotDisk::open(&path).expect("reopen").attrs(Slot::B),
            SlotAttrs::new(2, 1, false)
        );
        assert_eq!(disk.boot().expect("boot"), Slot::B);
        assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(2, 0, false));
        // Out of tries: A, whose attributes a boot does not change.
        assert_eq!(disk.boot().expect("boot"), Slot::A);
        assert_eq!(disk.attrs(Slot::A), SlotAttrs::new(1, 0, true));
        assert_eq!(
            SlotDisk::open(&path).expect("reopen").attrs(Slot::B),
            SlotAttrs::new(2, 0, false)
        );
    }
}
