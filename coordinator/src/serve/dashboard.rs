//! The live web dashboard: one hand-written page (HTML, CSS, JS drawing inline SVG) embedded in the
//! binary; no CDN and no build step. It holds no data: everything comes from the token-guarded API.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, as committed in `coordinator/assets/dashboard.html`.
const PAGE: &str = include_str!("../../assets/dashboard.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        PAGE,
    )
}
