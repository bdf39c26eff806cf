//! Payment endpoints: a buyer's payment intent, the provider's signed
//! webhook, and the refunds an operator owes.

use std::{marker::PhantomData, sync::Arc};

use poem::{Request, RequestBody, web::Data};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, OpenApi,
    param::{Header, Path, Query},
    payload::{Json, Payload},
    registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry},
    types::{ParseFromJSON, Type},
};

use super::Tag;
use crate::{
    auth::Caller,
    error::{ApiError, ErrorResponse},
    holds::Outcome,
    ids::{ReservationId, SaleId},
    limits::RateLimits,
    payments::{EventAnswer, PaymentEvent, PaymentIntent, RefundView},
    state::AppState,
};

#[derive(Default)]
pub struct PaymentsApi;

/// A JSON body kept as the bytes that came, for a signature over them: it
/// is parsed only once the signature holds. Documented as `T`.
pub struct SignedJson<T> {
    raw: Vec<u8>,
    of: PhantomData<T>,
}

impl<T: ParseFromJSON> SignedJson<T> {
    fn parse(raw: &[u8]) -> Result<T, ApiError> {
        let value: serde_json::Value = serde_json::from_slice(raw)
            .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
        T::parse_from_json(Some(value)).map_err(|e| ApiError::invalid(e.into_message()))
    }
}

impl<'a, T: Type + ParseFromJSON> ApiExtractor<'a> for SignedJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Json<T> as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: <T as Type>::schema_ref() as MetaSchemaRef,
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let raw = <Vec<u8> as poem::FromRequest>::from_request(request, body).await?;
        Ok(Self {
            raw,
            of: PhantomData,
        })
    }
}

#[derive(ApiResponse)]
enum IntentResponse {
    /// The hold is now paying; its deadline was extended.
    #[oai(status = 201)]
    Created(Json<PaymentIntent>),
    /// The intent made before.
    #[oai(status = 200)]
    Existing(Json<PaymentIntent>),
}

fn default_limit() -> i64 {
    100
}

#[OpenApi(tag = "Tag::Payments")]
impl PaymentsApi {
    /// Pay for a hold of a sale that takes payment.
    ///
    /// Returns the payment intent to hand to the provider, moves the hold to `paying` and
    /// extends its deadline once by the sale's `payment_seconds` from now.
    /// A repeat returns the same intent (200). The provider's webhook then
    /// confirms the hold, or releases it.
    #[oai(
        path = "/reservations/:rid/payment",
        method = "post",
        operation_id = "payReservation",
        tag = "Tag::Reservations"
    )]
    async fn intent(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        rid: Path<String>,
    ) -> Result<IntentResponse, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let rid = ReservationId::parse(&rid)?;
        let (intent, outcome) = state.payments.intent(&rid, caller.buyer_id()).await?;
        Ok(match outcome {
            Outcome::Created => IntentResponse::Created(Json(intent)),
            Outcome::Existing => IntentResponse::Existing(Json(intent)),
        })
    }

    /// The payment provider's webhook.
    ///
    /// Signed: `Flashdrop-Signature:
    /// t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`
    /// with `FLASHDROP_PAYMENT_WEBHOOK_SECRET`, `t` within 300 s of the
    /// server's clock. `succeeded` confirms a paying hold into an order
    /// (carrying `payment_id`); after the hold ended it records a refund due
    /// instead, never an order. `failed` or `canceled` releases the hold.
    /// Each `event_id` counts once: a repeat answers 200 and changes
    /// nothing. A 503 is safe to retry.
    #[oai(
        path = "/payments/webhook",
        method = "post",
        operation_id = "paymentWebhook"
    )]
    async fn webhook(
        &self,
        state: Data<&AppState>,
        /// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
        #[oai(name = "Flashdrop-Signature")]
        signature: Header<Option<String>>,
        body: SignedJson<PaymentEvent>,
    ) -> Result<Json<EventAnswer>, ErrorResponse> {
        let answer = state
            .payments
            .webhook(
                signature.as_deref(),
                &body.raw,
                SignedJson::<PaymentEvent>::parse,
            )
            .await?;
        Ok(Json(answer))
    }

    /// Payments that came after their hold ended: each is owed back to its
    /// buyer. Newest first.
    #[oai(
        path = "/admin/refunds",
        method = "get",
        operation_id = "listRefunds",
        tag = "Tag::Admin"
    )]
    async fn refunds(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        /// Only this sale's.
        sale_id: Query<Option<String>>,
        /// At most this many (1..=500).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "500"))
        )]
        limit: Query<i64>,
    ) -> Result<Json<Vec<RefundView>>, ErrorResponse> {
        caller.require_admin()?;
        let sale = sale_id.as_deref().map(SaleId::parse).transpose()?;
        Ok(Json(state.payments.refunds(sale.as_ref(), limit.0).await?))
    }
}
