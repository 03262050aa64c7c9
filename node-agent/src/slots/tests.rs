//! Whole update cycles on a disk image, each "reboot" reopening the disk as a
//! bootloader (and then the agent) would.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::image::test_image;
use super::*;

/// A reboot: a fresh handle makes gptprio's choice from what is on disk.
fn reboot(path: &Path) -> (SlotDisk, Slot) {
    let mut disk = SlotDisk::open(path).expect("open");
    let slot = disk.boot().expect("boot");
    (disk, slot)
}

/// Installs `data` into the passive slot of a disk booted from `booted`, up to arming.
async fn install(disk: &mut SlotDisk, booted: Slot, data: &[u8]) -> Slot {
    let passive = booted.other();
    disk.invalidate(passive).expect("invalidate");
    assert_eq!(disk.attrs(passive), SlotAttrs::INVALID);
    let size = data.len() as u64;
    disk.write_payload(passive, size, 0, data)
        .await
        .expect("write");
    let digest: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let verified = disk.verify(passive, size, &digest).await.expect("verify");
    disk.arm(verified).expect("arm");
    passive
}

#[tokio::test]
async fn healthy_update_switches_to_the_new_slot() {
    let (_dir, path) = test_image();
    let (mut disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::A);
    assert_eq!(
        disk.attrs(Slot::A),
        SlotAttrs::new(1, 0, true),
        "a good slot spends no try"
    );

    let new = install(&mut disk, booted, &vec![0x5a; 300_000]).await;
    assert_eq!(new, Slot::B);
    assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(2, 1, false));
    assert_eq!(disk.attrs(Slot::A), SlotAttrs::new(1, 0, true));
    drop(disk);

    // Reboot into B on its one try.
    let (mut disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::B);
    assert_eq!(
        disk.attrs(Slot::B),
        SlotAttrs::new(2, 0, false),
        "try spent before booting"
    );
    disk.mark_successful(Slot::B).expect("mark");
    assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(2, 0, true));
    drop(disk);

    // B stays.
    let (disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::B);
    assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(2, 0, true));
    drop(disk);

    // The next update goes to A and swaps the priorities.
    let (mut disk, booted) = reboot(&path);
    let new = install(&mut disk, booted, b"second release").await;
    assert_eq!(new, Slot::A);
    assert_eq!(disk.attrs(Slot::A), SlotAttrs::new(2, 1, false));
    assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(1, 0, true));
    drop(disk);
    let (mut disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::A);
    disk.mark_successful(Slot::A).expect("mark");
    assert_eq!(reboot(&path).1, Slot::A);
}

#[tokio::test]
async fn unhealthy_update_rolls_back_to_the_old_slot() {
    let (_dir, path) = test_image();
    let (mut disk, booted) = reboot(&path);
    install(&mut disk, booted, b"broken release").await;
    drop(disk);

    let (mut disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::B);
    // The health check fails.
    disk.roll_back(Slot::B).expect("roll back");
    assert_eq!(disk.attrs(Slot::B).priority, 0);
    drop(disk);

    let (disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::A);
    assert_eq!(disk.attrs(Slot::A), SlotAttrs::new(1, 0, true));
}

#[tokio::test]
async fn a_new_slot_that_never_reports_falls_back_when_its_try_is_spent() {
    let (_dir, path) = test_image();
    let (mut disk, booted) = reboot(&path);
    install(&mut disk, booted, b"hangs at boot").await;
    drop(disk);

    // It boots once and dies before the agent marks it (or rolls it back).
    assert_eq!(reboot(&path).1, Slot::B);
    // The bootloader alone brings A back, and keeps it.
    assert_eq!(reboot(&path).1, Slot::A);
    let (mut disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::A);
    assert_eq!(disk.attrs(Slot::B), SlotAttrs::new(2, 0, false));
    // The agent then cleans up the failed slot; the next update can reuse it.
    disk.roll_back(Slot::B).expect("roll back");
    install(&mut disk, Slot::A, b"fixed release").await;
    assert_eq!(reboot(&path).1, Slot::B);
}

#[tokio::test]
async fn a_payload_is_never_bootable_half_written() {
    let (_dir, path) = test_image();
    let (mut disk, booted) = reboot(&path);
    // A first update is armed, then a newer one starts before the reboot.
    install(&mut disk, booted, b"first").await;
    let passive = booted.other();
    disk.invalidate(passive).expect("invalidate");
    let err = disk
        .write_payload(passive, 10_000, 0, &[1u8; 4_000][..])
        .await
        .expect_err("interrupted");
    assert!(
        matches!(err, SlotError::PayloadShort { got: 4_000, .. }),
        "{err}"
    );
    drop(disk);
    // A crash here boots the old slot, never the half-written one.
    let (disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::A);
    assert_eq!(disk.attrs(Slot::B), SlotAttrs::INVALID);
}

#[tokio::test]
async fn arm_needs_a_bootable_fallback() {
    let (_dir, path) = test_image();
    let (mut disk, booted) = reboot(&path);
    install(&mut disk, booted, b"first").await;
    drop(disk);
    let (mut disk, booted) = reboot(&path);
    assert_eq!(booted, Slot::B);
    // B is on trial (no tries left, not successful): updating A now would
    // leave nothing proven to boot, so invalidating A is refused.
    disk.set_attrs(Slot::A, SlotAttrs::INVALID)
        .expect("low-level write is allowed");
    let data = b"next";
    let err = disk.invalidate(Slot::A).expect_err("no fallback");
    assert!(
        matches!(err, SlotError::NoFallback { other: Slot::B, .. }),
        "{err}"
    );
    disk.write_payload(Slot::A, 4, 0, &data[..])
        .await
        .expect("A is invalid already");
    let digest: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let verified = disk.verify(Slot::A, 4, &digest).await.expect("verify");
    let err = disk.arm(verified).expect_err("no fallback");
    assert!(
        matches!(err, SlotError::NoFallback { other: Slot::B, .. }),
        "{err}"
    );
}
