//! The HTTP API under `/api/v1`, one file per resource, plus the probes that
//! live outside it.

use poem_openapi::{OpenApiService, Tags};

pub mod admin;
pub mod explain;
pub mod health;
pub mod live;
pub mod lobby;
pub mod pages;
pub mod reservations;
pub mod sales;
pub mod waitlist;

#[derive(Tags)]
pub enum Tag {
    /// Sales and their live stock.
    Sales,
    /// Holds on units, and their confirmation into orders.
    Reservations,
    /// The FIFO waiting list for units that come back.
    Waitlist,
    /// The lobby before a sale: a verifiable draw, admission at a rate.
    Lobby,
    /// Scheduling and managing sales.
    Admin,
}

pub type Apis = (
    sales::SalesApi,
    live::LiveApi,
    reservations::ReservationsApi,
    waitlist::WaitlistApi,
    lobby::LobbyApi,
    admin::AdminApi,
);

pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            sales::SalesApi,
            live::LiveApi,
            reservations::ReservationsApi,
            waitlist::WaitlistApi,
            lobby::LobbyApi,
            admin::AdminApi,
        ),
        "Flashdrop",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Flash-sale backend: reserve units as a hold with a deadline, confirm the hold into \
         a durable order. Errors are `{\"code\", \"message\"}` with stable codes.",
    )
    .server("/api/v1")
}

/// The OpenAPI document as checked in under `openapi/openapi.json`.
pub fn spec_json() -> String {
    service().spec()
}
