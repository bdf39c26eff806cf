//! The HTTP API under `/api/v1`, one file per resource, plus the probes that
//! live outside it.

use std::collections::HashMap;

use poem::{
    Endpoint, Request, Response, Result, Route, endpoint::BoxEndpoint,
    error::MethodNotAllowedError, http::Method,
};
use poem_openapi::{__private::UrlQuery, OpenApi, OpenApiService, Tags};

pub mod admin;
pub mod explain;
pub mod health;
pub mod live;
pub mod lobby;
pub mod pages;
pub mod payments;
pub mod reservations;
pub mod sales;
pub mod waitlist;
pub mod webhooks;

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
    /// Paying for a hold, and the payment provider's signed webhook.
    Payments,
    /// Scheduling and managing sales.
    Admin,
    /// Outgoing webhooks (admin): endpoints and their deliveries.
    Webhooks,
}

pub type Apis = (
    sales::SalesApi,
    live::LiveApi,
    reservations::ReservationsApi,
    waitlist::WaitlistApi,
    lobby::LobbyApi,
    payments::PaymentsApi,
    admin::AdminApi,
    webhooks::WebhooksApi,
);

pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(Apis::default(), "Flashdrop", env!("CARGO_PKG_VERSION"))
        .description(
            "Flash-sale backend: reserve units as a hold with a deadline, confirm the hold into \
         a durable order. Errors are `{\"code\", \"message\"}` with stable codes.",
        )
        .server("/api/v1")
}

/// Adds the API's operations to `route`, each at its path under `/api/v1`.
///
/// This is what nesting `service().into_endpoint()` under `/api/v1` does,
/// without the nest: that path went through two routers, rebuilt each
/// request's URI and boxed its future five times, twice around the
/// operation alone. Here a request is matched once, and its operation's
/// future is the only large one boxed.
pub fn mount(route: Route) -> Route {
    let mut table = HashMap::new();
    Apis::default().add_routes(&mut table);
    table.into_iter().fold(route, |route, (path, methods)| {
        route.at(
            format!("/api/v1{path}"),
            Operations(methods.into_iter().collect()),
        )
    })
}

/// The operations at one path, by method: what poem's `RouteMethod` does
/// (HEAD answered as GET without the body, 405 for the rest), calling the
/// operation's own boxed endpoint without boxing it again, and giving it
/// the query parameters as poem-openapi's service does.
struct Operations(Vec<(Method, BoxEndpoint<'static>)>);

impl Operations {
    fn find(&self, method: &Method) -> Option<&BoxEndpoint<'static>> {
        self.0.iter().find(|(m, _)| m == method).map(|(_, ep)| ep)
    }
}

impl Endpoint for Operations {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        let head = req.method() == Method::HEAD && self.find(&Method::HEAD).is_none();
        if head {
            req.set_method(Method::GET);
        }
        let Some(operation) = self.find(req.method()) else {
            return Err(MethodNotAllowedError.into());
        };
        let query = UrlQuery(req.params().unwrap_or_default());
        req.extensions_mut().insert(query);
        let mut resp = operation.call(req).await?;
        if head {
            resp.set_body(());
        }
        Ok(resp)
    }
}

/// The OpenAPI document as checked in under `openapi/openapi.json`.
pub fn spec_json() -> String {
    document(&service())
}

/// The OpenAPI document of `api`, request bodies closed.
pub fn document(api: &OpenApiService<Apis, ()>) -> String {
    closed_request_bodies(&api.spec())
}

/// Swagger UI over `spec`, the document [`spec_json`] gives
/// (poem-openapi's own page embeds the document before
/// [`closed_request_bodies`] has said what it says).
pub fn swagger_ui_html(api: &OpenApiService<Apis, ()>, spec: &str) -> String {
    api.swagger_ui_html().replacen(&api.spec(), spec, 1)
}

/// What poem-openapi's parser does with a request body and its schema
/// leaves out, said on every schema a request body refers to: fields it
/// does not know are refused (`#[oai(deny_unknown_fields)]`), so
/// `additionalProperties: false`; an optional field sent as `null` is read
/// as left out, so each optional property is `nullable`.
fn closed_request_bodies(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(spec) else {
        return spec.to_owned();
    };
    let mut bodies = Vec::new();
    for operation in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for method in operation.as_object().into_iter().flat_map(|m| m.values()) {
            for media in method["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
            {
                if let Some(name) = media["schema"]["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                {
                    bodies.push(name.to_owned());
                }
            }
        }
    }
    for name in bodies {
        if let Some(schema) = doc["components"]["schemas"]
            .get_mut(&name)
            .and_then(|s| s.as_object_mut())
        {
            schema.insert(
                "additionalProperties".to_owned(),
                serde_json::Value::Bool(false),
            );
            let required = schema.get("required").cloned().unwrap_or_default();
            let required = required.as_array().map(Vec::as_slice).unwrap_or_default();
            for (field, property) in schema
                .get_mut("properties")
                .and_then(|p| p.as_object_mut())
                .into_iter()
                .flatten()
            {
                if !required.iter().any(|r| r == field.as_str())
                    && let Some(property) = property.as_object_mut()
                {
                    property.insert("nullable".to_owned(), serde_json::Value::Bool(true));
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
}
