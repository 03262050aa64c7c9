//! The boot choice of CoreOS GRUB's `gptprio.next`, as a pure function.
//!
//! Among the slots gptprio may boot (priority > 0 and successful or tries
//! left) the highest priority wins; on a tie the first on disk wins. A slot
//! not yet marked successful spends one try: its tries are decremented and
//! written back before it boots, so a slot that never becomes healthy stops
//! being chosen once its tries run out and the other slot boots again.

use super::{Slot, SlotAttrs};

/// What gptprio decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootChoice {
    /// The slot to boot.
    pub slot: Slot,
    /// The slot's attributes as they must be written before booting it.
    pub attrs: SlotAttrs,
    /// Whether `attrs` differ from what is on disk (a try was spent).
    pub spends_try: bool,
}

/// Chooses the slot to boot from `slots` given in disk order; `None` if none may boot.
pub fn choose(slots: &[(Slot, SlotAttrs)]) -> Option<BootChoice> {
    let mut best: Option<(Slot, SlotAttrs)> = None;
    for &(slot, attrs) in slots {
        if !attrs.bootable() {
            continue;
        }
        // Strictly greater: on a tie the one earlier on disk stays.
        if best.is_none_or(|(_, b)| attrs.priority > b.priority) {
            best = Some((slot, attrs));
        }
    }
    let (slot, attrs) = best?;
    if attrs.successful {
        return Some(BootChoice {
            slot,
            attrs,
            spends_try: false,
        });
    }
    // Not successful, so bootable() guarantees tries > 0.
    let spent = SlotAttrs {
        tries: attrs.tries.saturating_sub(1),
        ..attrs
    };
    Some(BootChoice {
        slot,
        attrs: spent,
        spends_try: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_priority_wins() {
        let c = choose(&[
            (Slot::A, SlotAttrs::new(1, 0, true)),
            (Slot::B, SlotAttrs::new(2, 0, true)),
        ])
        .expect("choice");
        assert_eq!(c.slot, Slot::B);
        assert!(!c.spends_try);
        assert_eq!(c.attrs, SlotAttrs::new(2, 0, true));
    }

    #[test]
    fn tie_goes_to_the_first_on_disk() {
        let c = choose(&[
            (Slot::A, SlotAttrs::new(3, 0, true)),
            (Slot::B, SlotAttrs::new(3, 0, true)),
        ])
        .expect("choice");
        assert_eq!(c.slot, Slot::A);
        let c = choose(&[
            (Slot::B, SlotAttrs::new(3, 0, true)),
            (Slot::A, SlotAttrs::new(3, 0, true)),
        ])
        .expect("choice");
        assert_eq!(c.slot, Slot::B);
    }

    #[test]
    fn unsuccessful_slot_spends_a_try() {
        let c = choose(&[
            (Slot::A, SlotAttrs::new(1, 0, true)),
            (Slot::B, SlotAttrs::new(2, 2, false)),
        ])
        .expect("choice");
        assert_eq!(c.slot, Slot::B);
        assert!(c.spends_try);
        assert_eq!(c.attrs, SlotAttrs::new(2, 1, false));
    }

    #[test]
    fn out_of_tries_falls_back() {
        let c = choose(&[
            (Slot::A, SlotAttrs::new(1, 0, true)),
            (Slot::B, SlotAttrs::new(2, 0, false)),
        ])
        .expect("choice");
        assert_eq!(c.slot, Slot::A);
        assert!(!c.spends_try);
    }

    #[test]
    fn priority_zero_is_never_chosen() {
        let c = choose(&[
            (Slot::A, SlotAttrs::new(1, 0, true)),
            (Slot::B, SlotAttrs::new(0, 15, true)),
        ])
        .expect("choice");
        assert_eq!(c.slot, Slot::A);
    }

    #[test]
    fn nothing_bootable_is_none() {
        assert_eq!(
            choose(&[
                (Slot::A, SlotAttrs::new(0, 0, true)),
                (Slot::B, SlotAttrs::new(4, 0, false))
            ]),
            None
        );
        assert_eq!(choose(&[]), None);
    }
}
