//! The OpenAPI document and the docs page: public, OpenAPI 3.1, every route of the router in
//! it with the methods it takes, the bearer scheme on all but the probes, and every named
//! answer an operation points to defined.

use reqwest::StatusCode;
use serde_json::Value;

use super::TestApp;

/// Every route of `router()`, as method and path.
const ROUTES: [(&str, &str); 15] = [
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("get", "/v1/budget"),
    ("put", "/v1/budget"),
    ("get", "/v1/alerts"),
    ("get", "/v1/tenants"),
    ("post", "/v1/tenants"),
    ("post", "/v1/tenants/{name}/keys"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys/{key}/revoke"),
    ("get", "/v1/audit"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

async fn document(app: &TestApp) -> anyhow::Result<Value> {
    let resp = app
        .anon
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(resp.json().await?)
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_needs_no_key() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let doc = document(&app).await?;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi is {version:?}");
    assert_eq!(doc["info"]["title"], "AIPROD Fleet API");
    Ok(())
}

#[tokio::test]
async fn every_route_is_in_the_document_with_its_methods_and_security() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let doc = document(&app).await?;
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the document"))[method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let keyed = !matches!(path, "/healthz" | "/readyz");
        assert_eq!(
            op["security"][0].get("bearer").is_some(),
            keyed,
            "{method} {path}: bearer security"
        );
        if keyed {
            for status in ["401", "403", "500", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(documented, ROUTES.len(), "an operation with no route");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    Ok(())
}

#[tokio::test]
async fn every_named_answer_and_schema_an_operation_points_to_is_defined() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let doc = document(&app).await?;
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').expect("a local $ref");
        assert!(doc.pointer(pointer).is_some(), "{r} is not defined");
    }
    Ok(())
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_docs_page_is_html_and_needs_no_key() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    // `/docs` redirects to `/docs/`, which reqwest follows.
    let resp = app.anon.get(format!("{}/docs", app.base)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"].to_str()?.to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    let page = resp.text().await?;
    assert!(page.contains("swagger-ui"), "{page}");
    // The page's script and its settings come from the API itself, not from a CDN.
    let init = app
        .anon
        .get(format!("{}/docs/swagger-initializer.js", app.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(init.contains("/openapi.json"), "{init}");
    assert!(
        !page.contains("https://"),
        "the page loads something remote: {page}"
    );
    Ok(())
}
