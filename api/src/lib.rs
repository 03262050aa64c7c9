//! Wire types shared by every part of Shoal, and a typed HTTP client.
//!
//! `keys` and `members` mirror etcd v2's JSON exactly; `locks` and `elections`
//! are Shoal's own `/api/v1` resources. Nothing here does IO except `client`.

pub mod auth;
pub mod client;
pub mod elections;
pub mod error;
pub mod fleet;
pub mod keys;
pub mod locks;
pub mod members;
pub mod tls;
pub mod updates;

pub use client::{Client, ClientError};
