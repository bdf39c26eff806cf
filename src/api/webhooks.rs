//! Admin endpoints for outgoing webhooks: register, list, delete and
//! enable endpoints; read and retry their deliveries.

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, param::Path, param::Query, payload::Json};

use super::Tag;
use crate::{
    auth::Caller,
    error::ErrorResponse,
    state::AppState,
    webhooks::{CreateEndpoint, CreatedEndpoint, DeliveryView, EndpointView},
};

#[derive(Default)]
pub struct WebhooksApi;

#[derive(ApiResponse)]
enum Created {
    /// Registered. The secret is in this answer only.
    #[oai(status = 201)]
    Endpoint(Json<CreatedEndpoint>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted: nothing more is sent to it.
    #[oai(status = 204)]
    Done,
}

fn default_limit() -> i64 {
    50
}

#[OpenApi(tag = "Tag::Webhooks")]
impl WebhooksApi {
    /// Register an endpoint. Every message whose cause comes after this
    /// answer is POSTed to it, signed as Standard Webhooks with the secret
    /// in this answer (shown once), in order per sale, at least once. The
    /// answer comes 1.5 s after the endpoint is stored, once every instance
    /// writes the messages it takes.
    #[oai(
        path = "/admin/webhooks",
        method = "post",
        operation_id = "createWebhookEndpoint"
    )]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        body: Json<CreateEndpoint>,
    ) -> Result<Created, ErrorResponse> {
        caller.require_admin()?;
        Ok(Created::Endpoint(Json(
            state.webhooks.create(body.0).await?,
        )))
    }

    /// The endpoints, without their secrets; a disabled one says why.
    #[oai(
        path = "/admin/webhooks",
        method = "get",
        operation_id = "listWebhookEndpoints"
    )]
    async fn list(
        &self,
        state: Data<&AppState>,
        caller: Caller,
    ) -> Result<Json<Vec<EndpointView>>, ErrorResponse> {
        caller.require_admin()?;
        Ok(Json(state.webhooks.list().await?))
    }

    /// Delete an endpoint.
    #[oai(
        path = "/admin/webhooks/:id",
        method = "delete",
        operation_id = "deleteWebhookEndpoint"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Deleted, ErrorResponse> {
        caller.require_admin()?;
        state.webhooks.delete(&id).await?;
        Ok(Deleted::Done)
    }

    /// Enable an endpoint that was disabled for failing: its messages go on
    /// from where they stopped, at once.
    #[oai(
        path = "/admin/webhooks/:id/enable",
        method = "post",
        operation_id = "enableWebhookEndpoint"
    )]
    async fn enable(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<EndpointView>, ErrorResponse> {
        caller.require_admin()?;
        Ok(Json(state.webhooks.enable(&id).await?))
    }

    /// An endpoint's deliveries, the most recently tried first, with every
    /// attempt and answer.
    #[oai(
        path = "/admin/webhooks/:id/deliveries",
        method = "get",
        operation_id = "listWebhookDeliveries"
    )]
    async fn deliveries(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
        /// At most this many deliveries (1..=200).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<i64>,
    ) -> Result<Json<Vec<DeliveryView>>, ErrorResponse> {
        caller.require_admin()?;
        Ok(Json(state.webhooks.deliveries(&id, limit.0).await?))
    }

    /// Send a delivery's message again, now (the same `webhook-id`); the
    /// answer has the new attempt.
    #[oai(
        path = "/admin/webhooks/:id/deliveries/:message_id/retry",
        method = "post",
        operation_id = "retryWebhookDelivery"
    )]
    async fn retry(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
        message_id: Path<String>,
    ) -> Result<Json<DeliveryView>, ErrorResponse> {
        caller.require_admin()?;
        Ok(Json(state.webhooks.retry(&id, &message_id).await?))
    }
}
