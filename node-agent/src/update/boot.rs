//! Which slot this boot runs from.
//!
//! On a real host the bootloader chose: the kernel command line names the usr
//! partition (`mount.usr=PARTUUID=<guid>`, or `usr=PARTUUID=<guid>`), and the
//! agent maps that GUID to a slot of its disk. When the command line names no
//! slot of the disk (a test host whose "disk" is an image file), the agent is
//! the bootloader: it makes gptprio's choice ([`SlotDisk::boot`], which spends
//! a try) but only when this start is a boot (a reboot was requested, or there
//! is no state yet); an agent that merely crashed keeps the slot it had.

use super::state::UpdateFile;
use crate::slots::{Slot, SlotDisk, SlotError};

/// Where the kernel command line is read on a real host.
pub const CMDLINE: &str = "/proc/cmdline";
/// The kernel's random id of this boot.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The usr partition GUID the kernel command line names, if any.
pub fn cmdline_partuuid(cmdline: &str) -> Option<uuid::Uuid> {
    cmdline.split_whitespace().find_map(|arg| {
        let value = arg
            .strip_prefix("mount.usr=")
            .or_else(|| arg.strip_prefix("usr="))?;
        let guid = value
            .strip_prefix("PARTUUID=")
            .or_else(|| value.strip_prefix("partuuid="))?;
        uuid::Uuid::parse_str(guid.trim_matches('"')).ok()
    })
}

/// This boot's kernel boot id, if readable.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// How the booted slot was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booted {
    /// The slot this boot runs from.
    pub slot: Slot,
    /// This start is a boot (not an agent restart within the same boot).
    pub fresh: bool,
}

/// Finds the booted slot: from `cmdline` when it names a slot of `disk`,
/// else by running gptprio when this start is a boot, else the slot `state` had.
///
/// `boot_id` is the kernel's id of this boot; on a real host a start is a
/// boot when it differs from the one recorded when the reboot was requested.
pub fn booted_slot(
    disk: &mut SlotDisk,
    cmdline: Option<&str>,
    boot_id: Option<&str>,
    state: Option<&UpdateFile>,
) -> Result<Booted, SlotError> {
    if let Some(slot) = cmdline
        .and_then(cmdline_partuuid)
        .and_then(|g| disk.slot_by_guid(g))
    {
        let recorded = state.and_then(|s| match &s.phase {
            super::state::Phase::Rebooting { boot_id, .. }
            | super::state::Phase::RollingBack { boot_id, .. } => boot_id.as_deref(),
            _ => None,
        });
        let fresh = state.is_none_or(|s| s.reboot_requested && recorded != boot_id);
        return Ok(Booted { slot, fresh });
    }
    match state {
        Some(s) if !s.reboot_requested => match s.booted {
            Some(slot) => Ok(Booted { slot, fresh: false }),
            None => Ok(Booted {
                slot: disk.boot()?,
                fresh: true,
            }),
        },
        _ => Ok(Booted {
            slot: disk.boot()?,
            fresh: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::{create_image, ImageLayout, SlotAttrs};

    #[test]
    fn cmdline_names_the_usr_partition() {
        let g = "7130c94a-213a-4e5a-8e26-6cce9662f132";
        let want = uuid::Uuid::parse_str(g).ok();
        assert_eq!(
            cmdline_partuuid(&format!("root=LABEL=ROOT mount.usr=PARTUUID={g} quiet")),
            want
        );
        assert_eq!(cmdline_partuuid(&format!("usr=PARTUUID={g}")), want);
        assert_eq!(
            cmdline_partuuid(&format!("mount.usr=PARTUUID=\"{g}\"")),
            want
        );
        assert_eq!(cmdline_partuuid("mount.usr=/dev/sda3 quiet"), None);
        assert_eq!(cmdline_partuuid("mount.usr=PARTUUID=nonsense"), None);
        assert_eq!(cmdline_partuuid("console=ttyS0 panic=1"), None);
        assert_eq!(cmdline_partuuid(""), None);
    }

    fn image() -> (tempfile::TempDir, SlotDisk) {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = create_image(dir.path().join("disk.img"), &ImageLayout::small()).expect("image");
        (dir, disk)
    }

    fn armed() -> SlotAttrs {
        SlotAttrs {
            priority: 2,
            tries: 1,
            successful: false,
        }
    }

    #[test]
    fn the_command_line_wins_when_it_names_a_slot_of_the_disk() {
        let (_dir, mut disk) = image();
        disk.set_attrs(Slot::B, armed()).expect("arm");
        let b = disk.info(Slot::B).part_guid;
        let line = format!("mount.usr=PARTUUID={b}");
        let got = booted_slot(&mut disk, Some(&line), Some("x"), None).expect("booted");
        assert_eq!(
            got,
            Booted {
                slot: Slot::B,
                fresh: true
            }
        );
        // The bootloader spent the try, not the agent.
        assert_eq!(disk.attrs(Slot::B), armed());
        // Same boot id as recorded at the reboot request: not a new boot.
        let state = UpdateFile {
            reboot_requested: true,
            phase: super::super::state::Phase::RollingBack {
                version: "2".into(),
                slot: Slot::B,
                reason: String::new(),
                boot_id: Some("x".into()),
            },
            ..UpdateFile::default()
        };
        let got = booted_slot(&mut disk, Some(&line), Some("x"), Some(&state)).expect("booted");
        assert!(!got.fresh);
        let got = booted_slot(&mut disk, Some(&line), Some("y"), Some(&state)).expect("booted");
        assert!(got.fresh);
    }

    #[test]
    fn a_test_host_runs_gptprio_only_on_a_boot() {
        let (_dir, mut disk) = image();
        disk.set_attrs(Slot::B, armed()).expect("arm");
        let other = format!("mount.usr=PARTUUID={}", uuid::Uuid::nil());
        // A crash restart keeps the slot it had, and spends no try.
        let running = UpdateFile {
            booted: Some(Slot::A),
            ..UpdateFile::default()
        };
        let got = booted_slot(&mut disk, Some(&other), None, Some(&running)).expect("booted");
        assert_eq!(
            got,
            Booted {
                slot: Slot::A,
                fresh: false
            }
        );
        assert_eq!(disk.attrs(Slot::B), armed());
        // A requested reboot runs gptprio: B, with its try spent.
        let rebooting = UpdateFile {
            reboot_requested: true,
            ..running
        };
        let got = booted_slot(&mut disk, None, None, Some(&rebooting)).expect("booted");
        assert_eq!(
            got,
            Booted {
                slot: Slot::B,
                fresh: true
            }
        );
        assert_eq!(disk.attrs(Slot::B).tries, 0);
        // The very first start boots too; B is out of tries now, so A.
        let got = booted_slot(&mut disk, None, None, None).expect("booted");
        assert_eq!(
            got,
            Booted {
                slot: Slot::A,
                fresh: true
            }
        );
    }
}
