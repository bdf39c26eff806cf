//! Admin endpoints: schedule, change and close sales.

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json};

use super::Tag;
use crate::{
    auth::Caller,
    error::ErrorResponse,
    holds::{Canceller, OrderView},
    ids::{ReservationId, SaleId},
    reports::{OrdersPage, SaleSummary},
    sales::rules::{CreateSale, PatchSale, SaleView},
    state::AppState,
    text::Text,
};

#[derive(Default)]
pub struct AdminApi;

#[derive(ApiResponse)]
enum Created {
    /// The sale is scheduled and open in Redis.
    #[oai(status = 201)]
    Sale(Json<SaleView>),
}

fn default_limit() -> i64 {
    50
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CancelOrder {
    /// Why, 1..=500 characters: kept with the order.
    #[oai(validator(min_length = 1, max_length = 500))]
    pub reason: Text,
}

#[OpenApi(tag = "Tag::Admin")]
impl AdminApi {
    /// Schedule a new sale.
    #[oai(path = "/admin/sales", method = "post", operation_id = "createSale")]
    async fn create(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        body: Json<CreateSale>,
    ) -> Result<Created, ErrorResponse> {
        caller.require_admin()?;
        Ok(Created::Sale(Json(state.sales.create(body.0).await?)))
    }

    /// List sales, as the public list does.
    #[oai(path = "/admin/sales", method = "get", operation_id = "adminListSales")]
    async fn list(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        /// At most this many sales (1..=200).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<i64>,
        /// The id of the last sale of the page before: the sales after it.
        after: Query<Option<String>>,
    ) -> Result<Json<Vec<SaleView>>, ErrorResponse> {
        caller.require_admin()?;
        Ok(Json(state.sales.list(limit.0, after.as_deref()).await?))
    }

    /// Change a sale. Before it starts: anything, stock only upwards. Once
    /// started: `name`, `ends_at` and `hold_seconds`. Other changes are 409.
    #[oai(
        path = "/admin/sales/:id",
        method = "patch",
        operation_id = "updateSale"
    )]
    async fn patch(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
        body: Json<PatchSale>,
    ) -> Result<Json<SaleView>, ErrorResponse> {
        caller.require_admin()?;
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.sales.patch(&sale, body.0).await?))
    }

    /// A sale's orders, oldest first, a page at a time: pass the previous
    /// page's `next_cursor` as `cursor`.
    #[oai(
        path = "/admin/sales/:id/orders",
        method = "get",
        operation_id = "saleOrders"
    )]
    async fn orders(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
        /// Orders per page (1..=500).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "500"))
        )]
        limit: Query<i64>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<OrdersPage>, ErrorResponse> {
        caller.require_admin()?;
        let sale = SaleId::parse(&id)?;
        Ok(Json(
            state
                .reports
                .orders(&sale, limit.0, cursor.as_deref())
                .await?,
        ))
    }

    /// Statistics of a sale from its orders and event log: units sold,
    /// revenue, holds made, confirmed, cancelled and expired, conversion,
    /// promotions, waitlist joins, time to sell out, peak holds per second.
    #[oai(
        path = "/admin/sales/:id/summary",
        method = "get",
        operation_id = "saleSummary"
    )]
    async fn summary(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<SaleSummary>, ErrorResponse> {
        caller.require_admin()?;
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.reports.summary(&sale).await?))
    }

    /// Cancel an order.
    ///
    /// The order becomes `cancelled` in MongoDB first; while the sale is
    /// on, its units go back at once, to the head of the waiting list
    /// first, else to stock (after the end they are recorded as returned
    /// and nothing is resold). The buyer's limit counts live orders only.
    /// A repeat answers the same order.
    #[oai(
        path = "/admin/orders/:id/cancel",
        method = "post",
        operation_id = "cancelOrder"
    )]
    async fn cancel_order(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
        body: Json<CancelOrder>,
    ) -> Result<Json<OrderView>, ErrorResponse> {
        caller.require_admin()?;
        let order = ReservationId::parse(&id)?;
        let by = Canceller::Admin(caller.buyer_id().to_owned());
        Ok(Json(
            state.holds.cancel_order(&order, by, &body.reason).await?,
        ))
    }

    /// End a sale now. No new holds; live holds may still be confirmed until
    /// their deadline.
    #[oai(
        path = "/admin/sales/:id/close",
        method = "post",
        operation_id = "closeSale"
    )]
    async fn close(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<SaleView>, ErrorResponse> {
        caller.require_admin()?;
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.sales.close(&sale).await?))
    }
}
