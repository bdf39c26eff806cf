//! The pages as files: served from the binary with their security headers.

use crate::helpers::spawn_app;

#[tokio::test]
async fn pages_are_served_with_a_content_security_policy() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/sales/0123456789abcdef01234567", "text/html"),
        ("/operator", "text/html"),
        ("/assets/buyer.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!resp.bytes().await.unwrap().is_empty());

        // HEAD answers like GET, without the body.
        let head = app.http.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert!(head.bytes().await.unwrap().is_empty());
    }
    let missing = app
        .http
        .get(app.url("/assets/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
