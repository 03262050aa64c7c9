//! [`create_image`]: a sparse disk image file with a CoreOS-like GPT.
//!
//! Partitions keep CoreOS's numbers: 1 `EFI-SYSTEM`, 2 `BIOS-BOOT`
//! (optional), 3 `USR-A`, 4 `USR-B`, 9 `ROOT`; each starts on a 1 MiB
//! boundary. USR-A is the booted, known-good slot (priority 1, tries 0,
//! successful), USR-B is empty (all attributes 0).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;

use gpt::disk::LogicalBlockSize;
use gpt::partition::Partition;
use gpt::partition_types::{self, Type};
use gpt::GptConfig;

use super::table::Table;
use super::{io_err, SlotAttrs, SlotDisk, SlotError, USR_TYPE_GUID};

/// Sector size of the images made here.
const SECTOR: u64 = 512;
/// Partition alignment (and the gap before the first one).
const ALIGN: u64 = 1 << 20;
/// One MiB.
const MIB: u64 = 1 << 20;

/// Partition sizes of a disk image, in bytes (each rounded up to 512-byte sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLayout {
    /// Size of `EFI-SYSTEM` (partition 1).
    pub efi_size: u64,
    /// Size of `BIOS-BOOT` (partition 2); `None` leaves it out.
    pub bios_boot_size: Option<u64>,
    /// Size of each of `USR-A` and `USR-B` (partitions 3 and 4).
    pub usr_size: u64,
    /// Size of `ROOT` (partition 9).
    pub root_size: u64,
}

impl ImageLayout {
    /// A small layout for tests: 1 MiB EFI and BIOS boot, 4 MiB per slot, 2 MiB root.
    pub fn small() -> ImageLayout {
        ImageLayout {
            efi_size: MIB,
            bios_boot_size: Some(MIB),
            usr_size: 4 * MIB,
            root_size: 2 * MIB,
        }
    }

    /// CoreOS's sizes: 128 MiB EFI, 2 MiB BIOS boot, 1 GiB per slot, the given root.
    pub fn coreos(root_size: u64) -> ImageLayout {
        ImageLayout {
            efi_size: 128 * MIB,
            bios_boot_size: Some(2 * MIB),
            usr_size: 1024 * MIB,
            root_size,
        }
    }

    /// The partitions to make: (number, name, type, size in bytes).
    fn partitions(&self) -> Vec<(u32, &'static str, Type, u64)> {
        let usr = Type {
            guid: USR_TYPE_GUID,
            os: partition_types::OperatingSystem::CoreOs,
        };
        let mut out = vec![(1, "EFI-SYSTEM", partition_types::EFI, self.efi_size)];
        if let Some(size) = self.bios_boot_size {
            out.push((2, "BIOS-BOOT", partition_types::BIOS, size));
        }
        out.push((3, "USR-A", usr.clone(), self.usr_size));
        out.push((4, "USR-B", usr, self.usr_size));
        out.push((
            9,
            "ROOT",
            partition_types::COREOS_ROOTFS_RESIZE,
            self.root_size,
        ));
        out
    }
}

/// Creates a new sparse disk image at `path` (which must not exist) and opens it.
pub fn create_image(path: impl AsRef<Path>, layout: &ImageLayout) -> Result<SlotDisk, SlotError> {
    let path = path.as_ref();
    // Place the partitions: (number, name, type, first LBA, sectors).
    let mut placed = Vec::new();
    let mut next = ALIGN;
    for (number, name, kind, size) in layout.partitions() {
        if size == 0 {
            return Err(SlotError::Layout(format!("{name} has size 0")));
        }
        let sectors = size.div_ceil(SECTOR);
        let first = next;
        next = sectors
            .checked_mul(SECTOR)
            .and_then(|len| first.checked_add(len))
            .and_then(|end| end.checked_next_multiple_of(ALIGN))
            .ok_or_else(|| SlotError::Layout(format!("{name} is too large")))?;
        placed.push((number, name, kind, first / SECTOR, sectors));
    }
    // One aligned MiB at the end holds the backup entry array and header.
    let total = next
        .checked_add(ALIGN)
        .ok_or_else(|| SlotError::Layout("the disk is too large".into()))?;

    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create", path))?;
    let made = write_layout(&mut file, path, total, placed);
    drop(file);
    if let Err(e) = made {
        // Do not leave a half-made image behind; the original error matters more.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    SlotDisk::open(path)
}

/// Sizes the new `file` to `total` bytes and writes the protective MBR and the GPT.
fn write_layout(
    file: &mut std::fs::File,
    path: &Path,
    total: u64,
    placed: Vec<(u32, &'static str, Type, u64, u64)>,
) -> Result<(), SlotError> {
    file.set_len(total).map_err(io_err("size", path))?;

    let gpt_err = |source| SlotError::Gpt {
        path: path.to_path_buf(),
        source,
    };
    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, None)
        .map_err(gpt_err)?;
    let known_good = SlotAttrs {
        priority: 1,
        tries: 0,
        successful: true,
    };
    for (number, name, kind, first_lba, sectors) in placed {
        let flags = if name == "USR-A" {
            known_good.apply_to(0)
        } else {
            0
        };
        disk.add_partition_at(name, number, first_lba, sectors, kind, flags)
            .map_err(gpt_err)?;
    }
    let mut table = Table {
        block_size: LogicalBlockSize::Lb512,
        primary: disk.primary_header().ok().cloned(),
        backup: disk.backup_header().ok().cloned(),
        partitions: disk
            .partitions()
            .iter()
            .map(|(n, p)| (*n, p.clone()))
            .collect::<BTreeMap<u32, Partition>>(),
    };
    drop(disk);

    // Protective MBR covering the whole disk (capped at the MBR's 32-bit limit).
    let mbr_sectors = u32::try_from(total / SECTOR - 1).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(mbr_sectors)
        .overwrite_lba0(file)
        .map_err(|e| SlotError::Io {
            action: "write the protective MBR to",
            path: path.to_path_buf(),
            source: match e {
                gpt::mbr::MBRError::Io(io) => io,
                other => std::io::Error::other(other.to_string()),
            },
        })?;
    table.write(file, path)
}

/// A fresh small test image in a temporary directory (kept while the guard lives).
#[cfg(test)]
pub(crate) fn test_image() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    create_image(&path, &ImageLayout::small()).expect("image");
    (dir, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::Slot;

    #[test]
    fn lays_out_coreos_partitions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let layout = ImageLayout::small();
        let disk = create_image(&path, &layout).expect("create");
        assert_eq!(
            disk.attrs(Slot::A).to_string(),
            "priority=1 tries=0 successful=1"
        );
        assert_eq!(disk.attrs(Slot::B), SlotAttrs::INVALID);

        let g = GptConfig::new()
            .only_valid_headers(true)
            .open(&path)
            .expect("valid GPT");
        let names: Vec<(u32, String)> = g
            .partitions()
            .iter()
            .map(|(n, p)| (*n, p.name.clone()))
            .collect();
        let want = [
            (1, "EFI-SYSTEM"),
            (2, "BIOS-BOOT"),
            (3, "USR-A"),
            (4, "USR-B"),
            (9, "ROOT"),
        ];
        assert_eq!(
            names,
            want.iter()
                .map(|(n, s)| (*n, s.to_string()))
                .collect::<Vec<_>>()
        );
        for p in g.partitions().values() {
            assert_eq!(p.first_lba % (ALIGN / SECTOR), 0, "{} aligned", p.name);
        }
        let efi = g.partitions().get(&1).expect("efi");
        assert_eq!(efi.part_type_guid, partition_types::EFI);
        assert_eq!(
            g.partitions()
                .get(&9)
                .map(|p| p.bytes_len(LogicalBlockSize::Lb512).ok()),
            Some(Some(layout.root_size))
        );
        // Sparse: far less is allocated than the apparent size.
        let meta = std::fs::metadata(&path).expect("metadata");
        assert!(meta.len() >= 12 * MIB, "{}", meta.len());
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < meta.len() / 2,
            "sparse"
        );
        // Protective MBR signature.
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
        assert_eq!(bytes[450], 0xee, "protective partition type");
    }

    #[test]
    fn bios_boot_is_optional() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let layout = ImageLayout {
            bios_boot_size: None,
            ..ImageLayout::small()
        };
        let disk = create_image(&path, &layout).expect("create");
        assert_eq!(disk.info(Slot::A).number, 3);
        let g = GptConfig::new().open(&path).expect("gpt");
        assert!(g.partitions().get(&2).is_none());
    }

    #[test]
    fn refuses_bad_layouts_and_existing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let layout = ImageLayout {
            usr_size: 0,
            ..ImageLayout::small()
        };
        let err = create_image(&path, &layout).expect_err("zero");
        assert!(matches!(err, SlotError::Layout(_)), "{err}");
        assert!(!path.exists(), "nothing created for a bad layout");
        let huge = ImageLayout {
            root_size: u64::MAX - 10,
            ..ImageLayout::small()
        };
        assert!(matches!(
            create_image(&path, &huge),
            Err(SlotError::Layout(_))
        ));
        std::fs::write(&path, b"precious").expect("write");
        let err = create_image(&path, &ImageLayout::small()).expect_err("exists");
        assert!(matches!(err, SlotError::Io { .. }), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"precious");
    }
}
