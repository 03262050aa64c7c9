//! The A/B OS slots of the update engine, in CoreOS's disk layout.
//!
//! A disk (a block device, or a disk image file on test hosts) carries a GPT
//! with two `/usr` slots, `USR-A` and `USR-B`, of the CoreOS usr partition
//! type. Which one boots is decided by the slot attributes in each GPT
//! entry's attribute flags ([`SlotAttrs`]: priority, tries, successful),
//! with the rules of CoreOS GRUB's `gptprio.next` ([`gptprio::choose`]).
//!
//! An update goes through these steps on the passive slot (the one not
//! booted), each a method of [`SlotDisk`]:
//!
//! 1. [`SlotDisk::invalidate`]: priority 0, tries 0, not successful, so a
//!    half-written slot can never boot. [`SlotDisk::write_payload`] refuses a
//!    slot that has not been invalidated.
//! 2. [`SlotDisk::write_payload`]: stream the payload in, resumable at an offset.
//! 3. [`SlotDisk::verify`]: SHA-256 of what is on the partition; gives a [`Verified`].
//! 4. [`SlotDisk::arm`]: takes the [`Verified`]; the passive slot gets priority 2
//!    and one try, the active one priority 1.
//! 5. Reboot. [`SlotDisk::boot`] is the bootloader's choice (it spends the try).
//! 6. [`SlotDisk::mark_successful`] after a healthy boot, or
//!    [`SlotDisk::roll_back`] so the old slot boots next.
//!
//! Every attribute change rewrites the GPT crash-safely (see `table`).
//! [`create_image`] makes a sparse CoreOS-like disk image for tests and
//! `shoal-agent disk init`.
//!
//! | module | holds |
//! | --- | --- |
//! | `attrs` | the priority/tries/successful bit packing |
//! | `gptprio` | the pure boot choice |
//! | `table` | reading the GPT (via the `gpt` crate) and the crash-safe rewrite |
//! | `disk` | [`SlotDisk`]: finding the slots, boot, invalidate/arm/mark/roll back |
//! | `payload` | streaming a payload into a slot and verifying its SHA-256 |
//! | `image` | [`create_image`]: a CoreOS-like GPT disk image |

mod attrs;
mod disk;
pub mod gptprio;
mod image;
mod payload;
mod table;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use attrs::SlotAttrs;
pub use disk::{SlotDisk, SlotInfo};
pub use image::{create_image, ImageLayout};
pub use payload::Verified;

/// The CoreOS usr partition type GUID both slots carry.
pub const USR_TYPE_GUID: uuid::Uuid = uuid::uuid!("5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6");

/// One of the two OS slots; serialized as its label (`USR-A`, `USR-B`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Slot {
    /// The partition labelled `USR-A`.
    #[serde(rename = "USR-A")]
    A,
    /// The partition labelled `USR-B`.
    #[serde(rename = "USR-B")]
    B,
}

impl Slot {
    /// Both slots.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The GPT partition name (label) of the slot.
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "USR-A",
            Slot::B => "USR-B",
        }
    }

    /// The other slot: the passive one when `self` is booted.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Index into per-slot arrays (A = 0, B = 1).
    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a slot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// Reading, writing or syncing the disk failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done, e.g. `open`, `write the payload to`.
        action: &'static str,
        /// The disk.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The disk has no GPT (neither header found at 512- nor 4096-byte sectors).
    #[error("{path} has no GPT partition table")]
    NoGpt {
        /// The disk.
        path: PathBuf,
    },
    /// The GPT could not be read or written by the `gpt` crate.
    #[error("GPT of {path}: {source}")]
    Gpt {
        /// The disk.
        path: PathBuf,
        /// The `gpt` crate's error.
        #[source]
        source: gpt::GptError,
    },
    /// The GPT is valid but of a shape this module does not handle.
    #[error("unsupported GPT on {path}: {reason}")]
    Unsupported {
        /// The disk.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// No partition carries the slot's label.
    #[error("{path} has no {slot} partition")]
    MissingSlot {
        /// The disk.
        path: PathBuf,
        /// The slot not found.
        slot: Slot,
    },
    /// More than one partition carries the slot's label.
    #[error("{path} has more than one {slot} partition")]
    DuplicateSlot {
        /// The disk.
        path: PathBuf,
        /// The ambiguous slot.
        slot: Slot,
    },
    /// The partition with the slot's label is not of the CoreOS usr type.
    #[error(
        "{slot} on {path} has partition type {found}, not the CoreOS usr type {USR_TYPE_GUID}"
    )]
    WrongSlotType {
        /// The disk.
        path: PathBuf,
        /// The slot.
        slot: Slot,
        /// The type GUID it has.
        found: uuid::Uuid,
    },
    /// gptprio finds no slot it may boot.
    #[error("no bootable slot on {path}: A has {a}, B has {b}")]
    NoBootableSlot {
        /// The disk.
        path: PathBuf,
        /// USR-A's attributes.
        a: SlotAttrs,
        /// USR-B's attributes.
        b: SlotAttrs,
    },
    /// The change would leave no bootable slot: the other slot cannot boot.
    #[error(
        "refusing to {action} {slot}: {other} is not bootable ({attrs}), so nothing would boot"
    )]
    NoFallback {
        /// The operation refused.
        action: &'static str,
        /// The slot it was asked for.
        slot: Slot,
        /// The other slot.
        other: Slot,
        /// The other slot's attributes.
        attrs: SlotAttrs,
    },
    /// A payload may only be written to an invalidated slot.
    #[error("refusing to write to {slot}: it is not invalidated ({attrs})")]
    NotInvalidated {
        /// The slot.
        slot: Slot,
        /// Its attributes.
        attrs: SlotAttrs,
    },
    /// The payload (or the range to verify) does not fit in the partition.
    #[error("payload of {size} bytes does not fit in {slot} ({capacity} bytes)")]
    TooLarge {
        /// The slot.
        slot: Slot,
        /// The payload size.
        size: u64,
        /// The partition size.
        capacity: u64,
    },
    /// The resume offset lies past the end of the payload.
    #[error("resume offset {offset} is past the payload's {size} bytes")]
    BadOffset {
        /// The offset asked for.
        offset: u64,
        /// The payload size.
        size: u64,
    },
    /// The payload stream failed; bytes before `durable_until` are on disk and synced.
    #[error("reading the payload for {slot} failed at byte {durable_until}")]
    PayloadRead {
        /// The slot.
        slot: Slot,
        /// Payload offset up to which the slot holds synced payload bytes: resume here.
        durable_until: u64,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
    /// The payload stream ended before the declared size.
    #[error("payload for {slot} ended at byte {got}, expected {size}")]
    PayloadShort {
        /// The slot.
        slot: Slot,
        /// Payload offset reached (synced): resume here.
        got: u64,
        /// The declared payload size.
        size: u64,
    },
    /// The payload stream holds more than the declared size.
    #[error("payload for {slot} is longer than the declared {size} bytes")]
    PayloadLong {
        /// The slot.
        slot: Slot,
        /// The declared payload size.
        size: u64,
    },
    /// The expected digest is not 64 hex digits.
    #[error("not a SHA-256 hex digest: {0:?}")]
    BadDigest(String),
    /// The slot's content does not have the expected SHA-256.
    #[error("{slot} does not hold the payload: sha256 {actual}, expected {expected}")]
    DigestMismatch {
        /// The slot.
        slot: Slot,
        /// The digest expected (lowercase hex).
        expected: String,
        /// The digest found (lowercase hex).
        actual: String,
    },
    /// A disk image layout that cannot be made.
    #[error("invalid image layout: {0}")]
    Layout(String),
}

/// Shorthand for an IO error on `path`.
fn io_err(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> SlotError {
    let path = path.to_path_buf();
    move |source| SlotError::Io {
        action,
        path,
        source,
    }
}
