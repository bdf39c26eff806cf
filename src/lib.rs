//! Flashdrop: a flash-sale backend. Holds live in Redis and change only by
//! the Lua scripts in `lua/`; confirmed orders are durable in MongoDB.

pub mod api;
pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod limits;
pub mod live;
pub mod persister;
pub mod reaper;
pub mod report;
pub mod sale;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod waitlist;
