//! Every error answer as the document shows it: the `Problem` body (RFC 9457, as `ApiError`
//! writes it), one named response per status, and the sets of them an operation lists in its
//! `responses(...)`, so that each handler's attribute names what it can answer in a few words.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Components, ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

/// An error answer (`application/problem+json`). Client errors name the field and the rule;
/// a `422` lists every broken rule in `errors`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct Problem {
    /// A URI naming the kind of problem, or `about:blank`.
    #[serde(rename = "type")]
    kind: String,
    /// A short summary of the kind.
    title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What is wrong, for a person.
    detail: String,
    /// The field or header at fault: `prompt`, `Authorization`, `Idempotency-Key`, `body`…
    field: Option<String>,
    /// The rule broken: `required`, `range`, `scope`, `rate_limit`, `overloaded`…
    rule: Option<String>,
    /// Every broken rule (`422` only).
    errors: Option<Vec<FieldError>>,
}

/// One broken rule of a request.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct FieldError {
    /// The JSON field, such as `duration_s` (or `body` for the document as a whole).
    field: String,
    /// A stable rule name, such as `range` or `required`.
    rule: String,
    /// What is wrong, for people.
    message: String,
}

/// One error answer: its status, its name among the components, what it means, and the
/// headers it carries.
struct Answer {
    status: u16,
    name: &'static str,
    description: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const RETRY_AFTER: (&str, &str) = ("Retry-After", "Seconds to wait before trying again.");

const BAD_REQUEST: Answer = Answer {
    status: 400,
    name: "BadRequest",
    description: "The body is not JSON, or could not be read.",
    headers: &[],
};
const UNAUTHORIZED: Answer = Answer {
    status: 401,
    name: "Unauthorized",
    description: "No valid key: missing, malformed, unknown, revoked or disabled (the same answer for each).",
    headers: &[("WWW-Authenticate", "`Bearer realm=\"aiprod\"`.")],
};
const FORBIDDEN: Answer = Answer {
    status: 403,
    name: "Forbidden",
    description: "The key lacks the scope (rule `scope`), or the request is beyond the tenant's entitlements (rule `entitlement`, `field` names which).",
    headers: &[],
};
const NOT_FOUND: Answer = Answer {
    status: 404,
    name: "NotFound",
    description: "No such resource (another tenant's job is not found either).",
    headers: &[],
};
const METHOD_NOT_ALLOWED: Answer = Answer {
    status: 405,
    name: "MethodNotAllowed",
    description: "The path does not take that method (any path, any method not listed for it).",
    headers: &[("Allow", "The methods the path takes.")],
};
const CONFLICT: Answer = Answer {
    status: 409,
    name: "Conflict",
    description: "The request conflicts with the resource's state or an earlier request.",
    headers: &[],
};
const TOO_LARGE: Answer = Answer {
    status: 413,
    name: "PayloadTooLarge",
    description: "The body is larger than `AIPROD_MAX_BODY_BYTES`.",
    headers: &[],
};
const UNSUPPORTED: Answer = Answer {
    status: 415,
    name: "UnsupportedMediaType",
    description: "The body is not declared `application/json`.",
    headers: &[],
};
const INVALID: Answer = Answer {
    status: 422,
    name: "Invalid",
    description: "A field, header, path segment or query parameter breaks a rule; `errors` lists every one.",
    headers: &[],
};
const TOO_MANY: Answer = Answer {
    status: 429,
    name: "TooManyRequests",
    description: "Over the tenant's rate of job submissions.",
    headers: &[
        RETRY_AFTER,
        ("RateLimit-Limit", "Submissions allowed in the window."),
        ("RateLimit-Remaining", "Submissions left in the window."),
        ("RateLimit-Reset", "Seconds until the window is full again."),
        ("RateLimit-Policy", "The policy, such as `60;w=60`."),
    ],
};
const INTERNAL: Answer = Answer {
    status: 500,
    name: "Internal",
    description: "Something failed on our side; it has been logged.",
    headers: &[],
};
const UNAVAILABLE: Answer = Answer {
    status: 503,
    name: "Unavailable",
    description: "Load shed (`AIPROD_HTTP_MAX_IN_FLIGHT`) or the request took too long (`AIPROD_HTTP_REQUEST_TIMEOUT_MS`).",
    headers: &[RETRY_AFTER],
};

const ALL: [&Answer; 12] = [
    &BAD_REQUEST,
    &UNAUTHORIZED,
    &FORBIDDEN,
    &NOT_FOUND,
    &METHOD_NOT_ALLOWED,
    &CONFLICT,
    &TOO_LARGE,
    &UNSUPPORTED,
    &INVALID,
    &TOO_MANY,
    &INTERNAL,
    &UNAVAILABLE,
];

/// The error answers as named responses, for `components.responses`.
pub(crate) fn register(components: &mut Components) {
    for a in ALL {
        let mut r = ResponseBuilder::new().description(a.description).content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build(),
        );
        for (name, description) in a.headers {
            let string = ObjectBuilder::new().schema_type(Type::String).build();
            let header = HeaderBuilder::new()
                .schema(string)
                .description(Some(*description))
                .build();
            r = r.header(*name, header);
        }
        components
            .responses
            .insert(a.name.to_owned(), RefOr::T(r.build()));
    }
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
    components
        .schemas
        .insert(FieldError::name().into_owned(), FieldError::schema());
}

fn refs(answers: &[&Answer]) -> BTreeMap<String, RefOr<Response>> {
    answers
        .iter()
        .map(|a| {
            (
                a.status.to_string(),
                RefOr::Ref(Ref::from_response_name(a.name)),
            )
        })
        .collect()
}

/// Declares a set of error answers an operation lists with `responses(...)`.
macro_rules! answers {
    ($($(#[$doc:meta])* $name:ident = [$($a:ident),+];)+) => {
        $(
            $(#[$doc])*
            pub(crate) struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    refs(&[$(&$a),+])
                }
            }
        )+
    };
}

answers! {
    /// What every operation behind a key can answer: no key, a key without the scope, load
    /// shed or timed out, our failure.
    Keyed = [UNAUTHORIZED, FORBIDDEN, INTERNAL, UNAVAILABLE];
    /// What reading a JSON body can answer: not JSON, too large, not declared JSON, a broken
    /// rule (a NUL character anywhere, a field's rule).
    JsonBody = [BAD_REQUEST, TOO_LARGE, UNSUPPORTED, INVALID];
    /// A path segment or query parameter that breaks a rule.
    Invalid = [INVALID];
    /// No such resource (also a path segment left empty).
    NotFound = [NOT_FOUND];
    /// A conflict with the resource's state or an earlier request.
    Conflict = [CONFLICT];
    /// Over the tenant's submission rate.
    RateLimited = [TOO_MANY];
    /// What a probe can answer besides its own: load shed or timed out.
    Shed = [UNAVAILABLE];
}
