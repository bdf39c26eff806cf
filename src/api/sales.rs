//! Public sale endpoints: list sales and read one with its live counts.

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path, param::Query, payload::Json};

use super::Tag;
use crate::{error::ErrorResponse, ids::SaleId, sales::rules::SaleView, state::AppState};

#[derive(Default)]
pub struct SalesApi;

fn default_limit() -> i64 {
    50
}

#[OpenApi(tag = "Tag::Sales")]
impl SalesApi {
    /// List sales, newest start first, with live counts.
    ///
    /// A page at a time: pass the last sale's `id` as `after` for the next
    /// page.
    #[oai(path = "/sales", method = "get", operation_id = "listSales")]
    async fn list(
        &self,
        state: Data<&AppState>,
        /// At most this many sales (1..=200).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<i64>,
        /// The id of the last sale of the page before: the sales after it.
        after: Query<Option<String>>,
    ) -> Result<Json<Vec<SaleView>>, ErrorResponse> {
        Ok(Json(state.sales.list(limit.0, after.as_deref()).await?))
    }

    /// One sale with its live status and counts.
    #[oai(path = "/sales/:id", method = "get", operation_id = "getSale")]
    async fn get(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
    ) -> Result<Json<SaleView>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.sales.view(&sale).await?))
    }
}
