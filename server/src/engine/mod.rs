//! The fleet engine: fleet's scheduler, run by the raft leader only.
//!
//! It decides apart from doing: [`view`] reads the key space into a
//! [`view::FleetView`], [`plan`] turns a view into [`plan::Action`]s with no
//! IO and no clock of its own, and [`run`] executes those actions through the
//! log with compare-and-swap, so no instance is ever placed twice, and
//! [`history`] records what the leader saw happen as cluster events.

pub mod history;
pub mod plan;
pub mod run;
pub mod view;

pub use run::run;
