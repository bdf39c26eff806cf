//! The application state handed to every handler: a small bag of services,
//! each a domain concern with its own methods over the shared stores.

use std::{ops::Deref, sync::Arc};

use crate::{
    holds::Holds, live::Hub, live::socket::LiveContext, lobby::Lobby, payments::Payments,
    recovery::Recovery, reports::Reports, sales::Sales, store::Store, waitlist::Waitlist,
    webhooks::Webhooks,
};

/// Shared behind one `Arc`: every request gets a copy of it.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub sales: Sales,
    pub lobby: Lobby,
    pub holds: Holds,
    pub payments: Payments,
    pub waitlist: Waitlist,
    pub reports: Reports,
    pub webhooks: Webhooks,
    pub recovery: Recovery,
    /// Fans the Redis subscription out to this process's WebSockets.
    pub live: Arc<Hub>,
    /// What each live socket works with.
    pub live_context: LiveContext,
    /// The stores, for the readiness probe.
    pub store: Store,
}
