//! The shared application state handed to every handler and background task.

use std::sync::Arc;

use redis::aio::ConnectionManager;

use crate::{auth::JwtKeys, config::Settings, store::mongo::Mongo, store::redis::Scripts};

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// One multiplexed connection for every command (not for pub/sub).
    pub redis: ConnectionManager,
    pub mongo: Mongo,
    pub scripts: Arc<Scripts>,
    pub jwt: JwtKeys,
    /// Lets a new hold wake this instance's reaper.
    pub reaper: Arc<crate::reaper::Coverage>,
    /// Fans the Redis subscription out to this process's WebSockets.
    pub live: Arc<crate::live::Hub>,
    pub limits: Arc<crate::limits::RateLimits>,
}
