//! The API's OpenAPI 3.1 document (`GET /openapi.json`) and its docs page (`GET /docs`).
//!
//! Each handler carries its operation (`#[utoipa::path]`: parameters, body, every status it can
//! answer) and the router registers it with utoipa-axum's `routes!`, so a route and its
//! operation are one declaration and cannot drift apart. The views the API builds derive their
//! schemas where they are defined; [`schemas`] and [`job_parts`] describe the JSON that has no
//! type of the API's own; [`wire`] turns the domain's enums and money into schemas from their
//! own wire names. The fuzz test (`tests/tests/e2e/fuzz.rs`) holds every answer to the
//! document.
//!
//! The docs page is Swagger UI, built from the `utoipa-swagger-ui-vendored` crate and served
//! from the binary: nothing is downloaded at build time (the plain crate fetches a zip in its
//! build script), and the page loads no script from a CDN, so no third-party code runs beside
//! a key typed into its "Authorize" box.

pub(crate) mod job_parts;
pub(crate) mod problems;
pub(crate) mod schemas;
pub(crate) mod wire;

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;

/// The bearer scheme's name. Operations behind a key spell it out as a literal in
/// `security(("bearer" = []))`, the only form utoipa's attribute takes.
pub(crate) const BEARER: &str = "bearer";

/// The document's frame: what the API is, its tags, and the components that no operation
/// reaches through a type (the security scheme, the named error answers).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIPROD Fleet API",
        description = "Takes AI video-generation jobs and reports on them. Every call but the \
            probes and the docs carries `Authorization: Bearer <key>`. Every error is \
            `application/problem+json` naming the `field` and the `rule`; a method a path does \
            not take answers `405` (`components.responses.MethodNotAllowed`). Money is a \
            decimal string of US dollars. Every answer carries an `x-request-id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "jobs", description = "A tenant's jobs: `jobs:write` submits and cancels, `jobs:read` reads."),
        (name = "admin", description = "The fleet's money, alerts, tenants, keys and audit log: the `admin` scope, or the admin token."),
        (name = "probes", description = "Liveness and readiness, without a key."),
    ),
    modifiers(&Frame),
)]
pub(crate) struct ApiDoc;

/// Adds the bearer scheme and the named error answers.
struct Frame;

impl Modify for Frame {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("aiprod_<prefix>_<secret>")
                    .description(Some(
                        "A tenant's API key (scopes `jobs:write`, `jobs:read`, `admin`), or the \
                         operator's admin token (only `admin`).",
                    ))
                    .build(),
            ),
        );
        problems::register(components);
    }
}

/// The routes that serve the document and the docs page (`/docs` redirects to `/docs/`).
pub(crate) fn docs(doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    SwaggerUi::new("/docs").url("/openapi.json", doc).into()
}
