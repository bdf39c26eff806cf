//! Flashdrop: a flash-sale backend. Holds live in Redis and change only by
//! the Lua scripts in `lua/`; confirmed orders are durable in MongoDB.

pub mod api;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod front_door;
pub mod holds;
pub mod ids;
pub mod keeper;
pub mod limits;
pub mod live;
pub mod lobby;
pub mod payments;
pub mod persister;
pub mod reaper;
pub mod recorder;
pub mod recovery;
pub mod reports;
pub mod sales;
pub mod startup;
pub mod state;
pub mod stopping;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod waitlist;
pub mod webhooks;
