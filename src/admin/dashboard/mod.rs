//! The dashboard: one page served at `/` of the admin listener, its HTML, CSS and script
//! compiled into the binary (no build step, nothing fetched from elsewhere).
//!
//! The page itself holds no secret and is served without credentials; everything it shows
//! comes from the admin API, called with the token the operator enters once (kept in the
//! tab's sessionStorage). The event stream is read with `fetch` rather than `EventSource`,
//! because only `fetch` can send the `Authorization` header: the stream is authorized
//! exactly like every other request, and no cookie or token in a URL is needed (see the
//! script's `streamEvents`).

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page: HTML with its style and script inlined.
const PAGE: &str = concat!(
    include_str!("head.html"),
    "<style>\n",
    include_str!("dashboard.css"),
    "</style>\n</head>\n",
    include_str!("body.html"),
    "<script>\n",
    include_str!("dashboard.js"),
    "</script>\n</body>\n</html>\n"
);

/// Only this page's own inline style and script run; it talks only to this origin and
/// may not be framed (the buttons act on the node).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PAGE)
}
