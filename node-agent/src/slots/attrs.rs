//! The ChromeOS/CoreOS slot attributes packed into a GPT entry's 64-bit
//! attribute flags (the layout `cgpt` and GRUB's `gptprio` use).
//!
//! | bits | field |
//! | --- | --- |
//! | 48..=51 | priority (0..=15, 0 = never boot) |
//! | 52..=55 | tries left (0..=15) |
//! | 56 | successful |
//!
//! Every other bit (UEFI's required/no-block-IO/legacy-bootable, other
//! type-specific bits) is kept as it is.

/// Lowest bit of the 4-bit priority field.
const PRIORITY_SHIFT: u32 = 48;
/// Lowest bit of the 4-bit tries field.
const TRIES_SHIFT: u32 = 52;
/// The successful bit.
const SUCCESSFUL_SHIFT: u32 = 56;
/// A 4-bit field before shifting.
const NIBBLE: u64 = 0xf;
/// Every bit these attributes own.
const OWNED: u64 = (NIBBLE << PRIORITY_SHIFT) | (NIBBLE << TRIES_SHIFT) | (1 << SUCCESSFUL_SHIFT);

/// The largest priority or tries value the 4-bit fields hold.
const MAX_FIELD: u8 = 15;

/// A slot's boot attributes: what gptprio reads to choose the slot to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotAttrs {
    /// Boot priority, 0..=15; 0 means the slot is never chosen.
    pub priority: u8,
    /// Boots left before an unsuccessful slot stops being chosen, 0..=15.
    pub tries: u8,
    /// The slot has booted and passed its health check.
    pub successful: bool,
}

impl SlotAttrs {
    /// Attributes with these fields (unchecked: `to_flags` clamps them).
    pub const fn new(priority: u8, tries: u8, successful: bool) -> SlotAttrs {
        SlotAttrs {
            priority,
            tries,
            successful,
        }
    }

    /// Attributes of a slot that must not boot (all zero): what `invalidate` writes.
    pub const INVALID: SlotAttrs = SlotAttrs {
        priority: 0,
        tries: 0,
        successful: false,
    };

    /// Reads the attributes out of a GPT entry's attribute flags.
    pub fn from_flags(flags: u64) -> SlotAttrs {
        SlotAttrs {
            priority: nibble(flags, PRIORITY_SHIFT),
            tries: nibble(flags, TRIES_SHIFT),
            successful: flags & (1 << SUCCESSFUL_SHIFT) != 0,
        }
    }

    /// Returns `flags` with these attributes written in, every other bit unchanged.
    ///
    /// Priority and tries above 15 are clamped to 15 (the field width).
    pub fn apply_to(self, flags: u64) -> u64 {
        let priority = u64::from(self.priority.min(MAX_FIELD));
        let tries = u64::from(self.tries.min(MAX_FIELD));
        (flags & !OWNED)
            | (priority << PRIORITY_SHIFT)
            | (tries << TRIES_SHIFT)
            | (u64::from(self.successful) << SUCCESSFUL_SHIFT)
    }

    /// Whether gptprio may choose this slot: priority > 0 and (successful or tries left).
    pub fn bootable(self) -> bool {
        self.priority > 0 && (self.successful || self.tries > 0)
    }
}

impl std::fmt::Display for SlotAttrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "priority={} tries={} successful={}",
            self.priority,
            self.tries,
            u8::from(self.successful)
        )
    }
}

/// The 4-bit field of `flags` starting at bit `shift`.
fn nibble(flags: u64, shift: u32) -> u8 {
    // The mask keeps 4 bits, so the value always fits.
    ((flags >> shift) & NIBBLE) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_sit_at_the_cgpt_bits() {
        let a = SlotAttrs {
            priority: 2,
            tries: 1,
            successful: true,
        };
        assert_eq!(a.apply_to(0), (2 << 48) | (1 << 52) | (1 << 56));
        let max = SlotAttrs {
            priority: 15,
            tries: 15,
            successful: true,
        };
        assert_eq!(max.apply_to(0), 0x01ff_0000_0000_0000);
    }

    #[test]
    fn round_trips_every_value() {
        for priority in 0..=15 {
            for tries in 0..=15 {
                for successful in [false, true] {
                    let a = SlotAttrs {
                        priority,
                        tries,
                        successful,
                    };
                    assert_eq!(SlotAttrs::from_flags(a.apply_to(0)), a);
                }
            }
        }
    }

    #[test]
    fn other_bits_are_kept() {
        // UEFI bits 0..=2, bits 3..=47, bits 57..=63 all set.
        let others = !OWNED;
        let a = SlotAttrs {
            priority: 5,
            tries: 3,
            successful: false,
        };
        let flags = a.apply_to(others | OWNED);
        assert_eq!(flags & !OWNED, others);
        assert_eq!(SlotAttrs::from_flags(flags), a);
        assert_eq!(SlotAttrs::INVALID.apply_to(flags), others);
    }

    #[test]
    fn reads_ignore_other_bits() {
        let flags = 0xfe00_ffff_ffff_ffff | (7 << 48) | (2 << 52);
        assert_eq!(
            SlotAttrs::from_flags(flags),
            SlotAttrs {
                priority: 7,
                tries: 2,
                successful: false
            }
        );
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let a = SlotAttrs {
            priority: 200,
            tries: 16,
            successful: false,
        };
        let back = SlotAttrs::from_flags(a.apply_to(0));
        assert_eq!((back.priority, back.tries), (15, 15));
        // No spill into the neighbouring fields.
        assert!(!back.successful);
    }

    #[test]
    fn bootable_needs_priority_and_success_or_tries() {
        let mk = |priority, tries, successful| SlotAttrs {
            priority,
            tries,
            successful,
        };
        assert!(mk(1, 0, true).bootable());
        assert!(mk(1, 1, false).bootable());
        assert!(!mk(0, 5, true).bootable());
        assert!(!mk(3, 0, false).bootable());
        assert!(!SlotAttrs::INVALID.bootable());
    }
}
