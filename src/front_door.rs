//! The front door: what every request goes through around its route, in
//! one step. Before the route: the request's id and span, the per-IP limit,
//! the cap on body size, and the shared state handed to handlers. After
//! it: a panic turned into a 500 with the error body, every error as the
//! JSON error body, `Allow` on a 405, the request's count and latency, and
//! `X-Request-Id` on the answer.
//!
//! One endpoint rather than a stack of middleware: each layer of a stack
//! keeps its own copy of the request in its future (about 500 bytes, plus
//! its answer), so eight layers made every request's outermost future
//! about 15 KB, allocated, copied and freed per request. Here the route's
//! future is wrapped once, with a few words beside it.

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use pin_project_lite::pin_project;
use poem::{Endpoint, IntoResponse, PathPattern, Request, Response, Result, http::Uri};

use crate::{
    api::explain, auth::JwtKeys, error, limits, limits::RateLimits, state::AppState, telemetry,
};

/// What handlers read from the request (`Data<&AppState>`, ...), handed to
/// every request.
struct Shared {
    state: AppState,
    jwt: Arc<JwtKeys>,
    limits: Arc<RateLimits>,
}

pub struct FrontDoor<E> {
    routes: E,
    shared: Option<Shared>,
    max_body: usize,
}

impl<E: Endpoint> FrontDoor<E> {
    /// The answers alone (ids, spans, panics, JSON errors, `Allow`,
    /// metrics) around `routes`, with the body capped at `max_body` bytes.
    pub fn new(routes: E, max_body: usize) -> Self {
        Self {
            routes,
            shared: None,
            max_body,
        }
    }

    /// Also the per-IP limit, and the state, keys and limits handed to
    /// every handler.
    pub fn serving(mut self, state: AppState, jwt: Arc<JwtKeys>, limits: Arc<RateLimits>) -> Self {
        self.shared = Some(Shared { state, jwt, limits });
        self
    }
}

impl<E: Endpoint> Endpoint for FrontDoor<E> {
    type Output = Response;

    fn call(&self, mut req: Request) -> impl Future<Output = Result<Response>> + Send {
        let request_id = telemetry::request_id(&req);
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %request_id,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        // Reference-counted: keeping it costs no copy of the path.
        let uri = req.uri().clone();
        let step = match self.admit(&mut req) {
            Admission::Answered(answer) => Step::Answered {
                answer: Some(answer),
            },
            Admission::Route => Step::Route {
                route: self.routes.call(req),
            },
            // Rare, so boxed: inline, reading the body (about 4 KB of
            // state) would be part of every request's future.
            Admission::AfterBody => Step::Body {
                body: Box::pin(async move {
                    limits::read_chunked_body(&mut req, self.max_body).await?;
                    self.routes.call(req).await.map(IntoResponse::into_response)
                }),
            },
        };
        Answer {
            step,
            span,
            request_id,
            uri,
            started: Instant::now(),
        }
    }
}

enum Admission {
    Route,
    /// A chunked body: read it (within the cap) first.
    AfterBody,
    /// The request goes no further: its answer.
    Answered(Result<Response>),
}

impl<E> FrontDoor<E> {
    /// Hands the request what handlers read, and checks the limits that
    /// need no I/O.
    fn admit(&self, req: &mut Request) -> Admission {
        if let Some(shared) = &self.shared {
            if let Some(refused) = shared.limits.refuse_ip(req) {
                return Admission::Answered(Ok(refused));
            }
            req.extensions_mut().insert(shared.state.clone());
            req.extensions_mut().insert(shared.jwt.clone());
            req.extensions_mut().insert(shared.limits.clone());
        }
        match limits::declared_body_fits(req, self.max_body) {
            Err(too_large) => Admission::Answered(Err(too_large)),
            Ok(true) => Admission::Route,
            Ok(false) => Admission::AfterBody,
        }
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<F, B> {
        Route { #[pin] route: F },
        Body { body: B },
        Answered { answer: Option<Result<Response>> },
    }
}

pin_project! {
    /// A request's route, and what its answer needs after it.
    struct Answer<F, B> {
        #[pin]
        step: Step<F, B>,
        span: tracing::Span,
        request_id: String,
        uri: Uri,
        started: Instant,
    }
}

impl<F, O, B> Future for Answer<F, B>
where
    F: Future<Output = Result<O>>,
    O: IntoResponse,
    B: Future<Output = Result<Response>> + Unpin,
{
    type Output = Result<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let polled = catch_unwind(AssertUnwindSafe(|| match this.step.as_mut().project() {
            StepProj::Route { route } => route.poll(cx).map(|r| r.map(IntoResponse::into_response)),
            StepProj::Body { body } => Pin::new(body).poll(cx),
            StepProj::Answered { answer } => Poll::Ready(
                answer
                    .take()
                    .expect("a front door answer is polled once it is ready"),
            ),
        }));
        let resp = match polled {
            Ok(polled) => match ready!(polled) {
                Ok(resp) => resp,
                Err(err) => error::into_json_response(err),
            },
            Err(panic) => telemetry::panic_answer(panic),
        };
        // Nothing of the route is needed any more, nor polled again.
        this.step.set(Step::Answered { answer: None });
        let resp = explain::allow_on_405(resp, this.uri.path());
        let status = resp.status().as_u16();
        let latency_ms = this.started.elapsed().as_secs_f64() * 1000.0;
        this.span.record("status", status);
        this.span.record("latency_ms", latency_ms);
        telemetry::record_request(resp.data::<PathPattern>(), status, latency_ms / 1000.0);
        if resp.status().is_server_error() {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::debug!(status, latency_ms, "request done");
        }
        Poll::Ready(Ok(telemetry::with_request_id(resp, this.request_id)))
    }
}
