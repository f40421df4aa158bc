//! The OpenAPI 3 document of the API, generated from the handlers' annotations and served at
//! `/api/v1/openapi.json` (viewer). Every operation also lists the errors every route can
//! give, in the API's error shape (Alertmanager's routes: a JSON string), and its security.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ApiError;
use super::{ApiState, Role};

pub fn router() -> Router<ApiState> {
    Router::new().route("/api/v1/openapi.json", get(document))
}

async fn document(
    State(s): State<ApiState>,
    h: HeaderMap,
) -> Result<Json<utoipa::openapi::OpenApi>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    Ok(Json(ApiDoc::openapi()))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "PrismWatch API",
        description = "Alerts, silences, rules and routes, series, the audit log and status of PrismWatch; and Alertmanager's API v2 for its clients (amtool, Prometheus). Every route needs `Authorization: Bearer <API key or JWT>` (Alertmanager's routes also take basic auth, the password being the key or token); roles: viewer reads, operator acks, silences and resolves, admin reloads and reads the audit log."
    ),
    paths(
        super::status,
        super::reload,
        super::alerts::list_alerts,
        super::alerts::get_alert,
        super::alerts::ack,
        super::alerts::unack,
        super::alerts::resolve,
        super::alerts::stream,
        super::silences::list_silences,
        super::silences::get_silence,
        super::silences::create_silence,
        super::silences::expire_silence,
        super::rules::list_rules,
        super::rules::get_rule,
        super::rules::list_routes,
        super::rules::get_route,
        super::audit::query,
        super::series::by_labels,
        super::series::of_alert,
        super::capacity::report,
        super::keys::list,
        super::keys::create,
        super::keys::remove,
        super::alertmanager::status,
        super::alertmanager::receivers,
        super::alertmanager::list_alerts,
        super::alertmanager::post_alerts,
        super::alertmanager::list_silences,
        super::alertmanager::get_silence,
        super::alertmanager::post_silence,
        super::alertmanager::expire_silence,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Conventions)
)]
pub struct ApiDoc;

/// The API's error shape.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `refused`, `body_too_large`,
    /// `rate_limited`, `unavailable`, `timeout`.
    code: String,
    /// What is wrong, and where.
    message: String,
}

/// Security schemes, and the errors of every operation.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let alertmanager = path.starts_with("/api/v2/");
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
            ]
            .into_iter()
            .flatten()
            {
                add_errors(op, alertmanager);
            }
        }
    }
}

fn add_errors(op: &mut Operation, alertmanager: bool) {
    let mut security = vec![SecurityRequirement::new("bearer", Vec::<String>::new())];
    if alertmanager {
        security.push(SecurityRequirement::new("basic", Vec::<String>::new()));
    }
    op.security = Some(security);
    for (code, what) in [
        (
            "400",
            "The request is malformed: the message says what and where",
        ),
        ("401", "No credentials, or credentials that do not hold"),
        ("403", "The caller's role is too small for this route"),
        ("404", "No such thing"),
        ("409", "Refused by the alert manager (the message says why)"),
        ("413", "The body is too large"),
        (
            "429",
            "Too many requests from this client (Retry-After says when to try again)",
        ),
        (
            "503",
            "Not connected to NATS yet, the alert manager did not answer, or no answer in time",
        ),
    ] {
        let content = if alertmanager {
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(String::schema()))
                .build()
        } else {
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build()
        };
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(what)
                    .content("application/json", content)
                    .build()
                    .into()
            });
    }
}

/// `String`'s schema (for the Alertmanager routes' errors).
trait StringSchema {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema>;
}

impl StringSchema for String {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is in the document (and nothing else is).
    #[test]
    fn the_document_lists_every_route() {
        let doc = ApiDoc::openapi();
        let mut documented: Vec<String> = doc
            .paths
            .paths
            .iter()
            .flat_map(|(p, item)| {
                let mut m = Vec::new();
                if item.get.is_some() {
                    m.push(format!("GET {p}"));
                }
                if item.post.is_some() {
                    m.push(format!("POST {p}"));
                }
                if item.delete.is_some() {
                    m.push(format!("DELETE {p}"));
                }
                m
            })
            .collect();
        documented.sort();
        let sources = [
            include_str!("mod.rs"),
            include_str!("alerts.rs"),
            include_str!("silences.rs"),
            include_str!("rules.rs"),
            include_str!("audit.rs"),
            include_str!("series.rs"),
            include_str!("alertmanager.rs"),
            include_str!("keys.rs"),
            include_str!("capacity.rs"),
        ];
        // `.route("<path>", get(..).post(..))` in the routers.
        let mut served = Vec::new();
        let re = regex::Regex::new(r#"\.route\(\s*"([^"]+)",\s*([^\n]+)"#).unwrap();
        for src in sources {
            for c in re.captures_iter(src) {
                for (word, method) in [("get(", "GET"), ("post(", "POST"), ("delete(", "DELETE")] {
                    if c[2].contains(word) {
                        served.push(format!("{method} {}", &c[1]));
                    }
                }
            }
        }
        served.sort();
        assert_eq!(documented, served);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert!(json["paths"]["/api/v1/alerts"]["get"]["responses"]["401"].is_object());
        assert!(json["components"]["schemas"]["ManagedAlert"].is_object());
    }
}
