//! The buyer page (`/`, `/sales/{id}`) and the operator page (`/operator`):
//! static files from `web/`, built into the binary, served with a strict
//! content security policy. They talk to the API and the live feed like
//! any other client.

use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route,
    endpoint::{EmbeddedFileEndpoint, EmbeddedFilesEndpoint},
    http::{Method, StatusCode},
};

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Web;

/// Scripts and styles from this origin only; the live feed on this origin;
/// never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

pub fn routes() -> Route {
    Route::new()
        .at("/", page("index.html"))
        .at("/sales/:id", page("index.html"))
        .at("/operator", page("operator.html"))
        .nest(
            "/assets",
            EmbeddedFilesEndpoint::<Web>::new().around(secured),
        )
}

fn page(file: &str) -> impl Endpoint<Output = Response> {
    EmbeddedFileEndpoint::<Web>::new(file).around(secured)
}

async fn secured<E: Endpoint>(next: E, mut req: poem::Request) -> poem::Result<Response> {
    // HEAD is GET without the body (the file endpoints answer GET only).
    let head = req.method() == Method::HEAD;
    if head {
        req.set_method(Method::GET);
    }
    let mut resp = match next.call(req).await {
        Ok(resp) => resp.into_response(),
        // The file's ETag matched: not an error, an empty 304.
        Err(err) if err.status() == StatusCode::NOT_MODIFIED => {
            StatusCode::NOT_MODIFIED.into_response()
        }
        Err(err) => return Err(err),
    };
    if head {
        resp.set_body(());
    }
    Ok(resp
        .with_header("Content-Security-Policy", CSP)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("Cache-Control", "no-cache")
        .into_response())
}
