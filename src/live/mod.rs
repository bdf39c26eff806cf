//! The live feed: one Redis subscription per process ([`subscriber`]),
//! fanned out by a [`hub`] to this process's WebSockets ([`socket`]). Stock
//! is latest-value, so a slow socket skips to the newest state and never
//! grows memory; personal events go through a small buffer per sale,
//! filtered by buyer.

pub mod admission;
pub mod hub;
pub mod lobby;
pub mod outlet;
pub mod socket;
pub mod subscriber;

pub use hub::Hub;
