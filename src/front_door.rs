//! The front door: what every request goes through around its route, in
//! one step. Before the route: the request's id and span, the per-IP limit,
//! the shared state handed to handlers, and a JSON body read whole within
//! the cap on body size (kept, so that a body the generated parser refuses
//! can be explained field by field). After it: a panic turned into a 500
//! with the error body, parse failures in plain words, every error as the
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

use bytes::Bytes;
use pin_project_lite::pin_project;
use poem::{
    Endpoint, IntoResponse, PathPattern, Request, Response, Result,
    http::{Method, Uri},
};

use crate::{
    api::explain,
    auth::JwtKeys,
    error,
    limits::{self, DeclaredBody, RateLimits},
    state::AppState,
    telemetry,
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
        let route = move |req| self.routes.call(req);
        let step = match self.admit(&mut req) {
            Admission::Answered(answer) => Step::Answered {
                answer: Some(answer),
            },
            Admission::Route => Step::Route { route: route(req) },
            Admission::ReadBody { limit } => {
                let (body, max) = (req.take_body(), self.max_body);
                Step::Reading {
                    // Boxed: reading within a limit is about 4 KB of state,
                    // and only bodies pay for it.
                    read: Box::pin(async move {
                        match limit {
                            Some(limit) => body.into_bytes_limit(limit).await,
                            None => body.into_bytes().await,
                        }
                        .map_err(|e| limits::unreadable(e, max))
                    }),
                    req: Some(req),
                }
            }
        };
        Answer {
            step,
            route,
            body: None,
            span,
            request_id,
            uri,
            started: Instant::now(),
        }
    }
}

enum Admission {
    Route,
    /// Read the body whole first: a declared length that fits, of a POST,
    /// PATCH or PUT (the API's JSON bodies), or any chunked body, read up
    /// to `limit`.
    ReadBody {
        limit: Option<usize>,
    },
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
        match limits::declared_body(req, self.max_body) {
            Err(too_large) => Admission::Answered(Err(too_large)),
            Ok(DeclaredBody::Empty) => Admission::Route,
            Ok(DeclaredBody::Chunked) => Admission::ReadBody {
                limit: Some(self.max_body),
            },
            Ok(DeclaredBody::Fits)
                if matches!(*req.method(), Method::POST | Method::PATCH | Method::PUT) =>
            {
                Admission::ReadBody { limit: None }
            }
            Ok(DeclaredBody::Fits) => Admission::Route,
        }
    }
}

type ReadBody = Pin<Box<dyn Future<Output = Result<Bytes>> + Send>>;

pin_project! {
    #[project = StepProj]
    enum Step<F> {
        Reading { read: ReadBody, req: Option<Request> },
        Route { #[pin] route: F },
        Answered { answer: Option<Result<Response>> },
    }
}

pin_project! {
    /// A request on its way through, and what its answer needs after it.
    struct Answer<F, R> {
        #[pin]
        step: Step<F>,
        route: R,
        // The body as read, for explaining a parse failure.
        body: Option<Bytes>,
        span: tracing::Span,
        request_id: String,
        uri: Uri,
        started: Instant,
    }
}

impl<F, O, R> Future for Answer<F, R>
where
    F: Future<Output = Result<O>>,
    O: IntoResponse,
    R: Fn(Request) -> F,
{
    type Output = Result<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let polled = catch_unwind(AssertUnwindSafe(|| {
            loop {
                match this.step.as_mut().project() {
                    StepProj::Reading { read, req } => {
                        let read = ready!(read.as_mut().poll(cx));
                        let mut req = req.take().expect("a request is read once");
                        match read {
                            Ok(bytes) => {
                                req.set_body(bytes.clone());
                                *this.body = Some(bytes);
                                let route = (this.route)(req);
                                this.step.set(Step::Route { route });
                            }
                            Err(err) => {
                                let answer = Some(Err(err));
                                this.step.set(Step::Answered { answer });
                            }
                        }
                    }
                    StepProj::Route { route } => {
                        return route.poll(cx).map(|r| r.map(IntoResponse::into_response));
                    }
                    StepProj::Answered { answer } => {
                        return Poll::Ready(
                            answer
                                .take()
                                .expect("a front door answer is polled once it is ready"),
                        );
                    }
                }
            }
        }));
        let resp = match polled {
            Ok(polled) => match ready!(polled) {
                Ok(resp) => resp,
                Err(err) => error::into_json_response(explain::explain(err, this.body.as_deref())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use poem::{Route, get, handler};

    #[handler]
    fn hello() -> &'static str {
        "hello"
    }

    /// Each layer of a middleware stack kept its own copy of the request
    /// (about 500 bytes) and of its answer in its future; the front door
    /// keeps the route's future and a few words beside it.
    #[test]
    fn the_front_doors_future_is_the_routes_and_a_few_words() {
        let routes = Route::new().at("/hello", get(hello));
        let route_alone = std::mem::size_of_val(&routes.call(Request::default()));
        let door = FrontDoor::new(Route::new().at("/hello", get(hello)), 1024);
        let through_door = std::mem::size_of_val(&door.call(Request::default()));
        assert!(
            through_door <= route_alone + 512,
            "the route's future is {route_alone} bytes, through the front door {through_door}"
        );
    }

    #[tokio::test]
    async fn a_body_read_at_the_door_reaches_the_route_and_a_refused_one_is_explained() {
        #[handler]
        fn echo(body: String) -> String {
            body
        }
        let door = FrontDoor::new(Route::new().at("/echo", poem::post(echo)), 16);
        let resp = door
            .call(
                Request::builder()
                    .method(Method::POST)
                    .uri_str("/echo")
                    .body("hi"),
            )
            .await
            .unwrap();
        assert_eq!(resp.into_body().into_string().await.unwrap(), "hi");
        let resp = door
            .call(
                Request::builder()
                    .method(Method::POST)
                    .uri_str("/echo")
                    .header("content-length", "17")
                    .body("x".repeat(17)),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), poem::http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
