//! The application state handed to every handler: a small bag of services,
//! each a domain concern with its own methods over the shared stores.

use std::sync::Arc;

use crate::{
    holds::Holds, live::Hub, live::socket::LiveContext, recovery::Recovery, reports::Reports,
    sales::Sales, store::Store, waitlist::Waitlist,
};

#[derive(Clone)]
pub struct AppState {
    pub sales: Sales,
    pub holds: Holds,
    pub waitlist: Waitlist,
    pub reports: Reports,
    pub recovery: Recovery,
    /// Fans the Redis subscription out to this process's WebSockets.
    pub live: Arc<Hub>,
    /// What each live socket works with.
    pub live_context: LiveContext,
    /// The stores, for the readiness probe.
    pub store: Store,
}
