//! `shoal-agent disk init PATH [--usr-size MiB]`: makes a sparse disk image
//! in CoreOS's layout (USR-A booted and good, USR-B empty) for a test host's
//! `--disk`, and prints its partitions.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::slots::{create_image, ImageLayout, Slot, SlotDisk, SlotError};

/// One MiB.
const MIB: u64 = 1 << 20;

/// `shoal-agent disk ...`.
#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// What to do with a disk.
    #[command(subcommand)]
    pub action: DiskAction,
}

/// The `disk` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DiskAction {
    /// Create a CoreOS-layout GPT disk image file (it must not exist).
    Init {
        /// The image file to create.
        path: PathBuf,
        /// Size of each of USR-A and USR-B, in MiB.
        #[arg(long, default_value_t = 64)]
        usr_size: u64,
    },
}

/// Runs a `disk` subcommand, printing what it made to `out`.
pub fn run(args: &DiskArgs, out: &mut dyn Write) -> Result<(), SlotError> {
    match &args.action {
        DiskAction::Init { path, usr_size } => {
            let usr_size = usr_size
                .checked_mul(MIB)
                .filter(|s| *s > 0)
                .ok_or_else(|| SlotError::Layout(format!("--usr-size {usr_size} MiB")))?;
            let layout = ImageLayout {
                usr_size,
                ..ImageLayout::small()
            };
            let disk = create_image(path, &layout)?;
            let _ = writeln!(out, "{}", describe(&disk));
            Ok(())
        }
    }
}

/// A few lines about the disk's slots.
pub fn describe(disk: &SlotDisk) -> String {
    let mut text = format!("created {}", disk.path().display());
    for slot in Slot::ALL {
        let info = disk.info(slot);
        text.push_str(&format!(
            "\n{slot}: partition {} PARTUUID={} {} MiB ({})",
            info.number,
            info.part_guid,
            info.size / MIB,
            disk.attrs(slot)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_an_image_with_both_slots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let args = DiskArgs {
            action: DiskAction::Init {
                path: path.clone(),
                usr_size: 8,
            },
        };
        let mut out = Vec::new();
        run(&args, &mut out).expect("init");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("USR-A: partition 3") && text.contains("8 MiB"),
            "{text}"
        );
        let disk = SlotDisk::open(&path).expect("open");
        assert_eq!(disk.info(Slot::B).size, 8 * MIB);
        assert!(
            run(&args, &mut Vec::new()).is_err(),
            "an existing file is kept"
        );
    }
}
