//! The OpenAPI document at `/api/openapi.json`, generated from the handlers and types (utoipa).

use axum::Json;
use utoipa::OpenApi;

use super::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Squall coordinator serve API",
        description = "Start, watch and stop load-test runs on a standing Squall cluster. With --token, send `Authorization: Bearer TOKEN`."
    ),
    paths(
        api::workers,
        api::runs,
        api::start,
        api::status,
        api::stop,
        api::file,
        api::save_baseline,
        api::compare,
        api::baselines,
        api::baseline,
        api::live,
        api::metrics
    ),
    components(schemas(
        api::StartRequest,
        api::RunStatus,
        api::BaselineRequest,
        api::ApiError,
        super::store::RunRecord,
        super::store::RunState,
        super::store::BaselineRecord,
        crate::cluster::MemberView,
        crate::report::LiveView
    ))
)]
struct ApiDoc;

/// The document, built from the code at each request (it is small).
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
