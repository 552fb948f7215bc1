//! The Vertex and model settings' tests: the old Veo names, the new ones, and the models that
//! cannot run without a project or a token.

// figment's Jail returns its large error type by design.
#![allow(clippy::result_large_err)]
use super::*;
use secrecy::ExposeSecret;

#[test]
fn the_old_veo_names_still_set_vertex_ai() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_VEO_PROJECT", "acme");
        jail.set_env("AIPROD_VEO_LOCATION", "europe-west4");
        jail.set_env("AIPROD_VEO_BASE_URL", "http://127.0.0.1:9003");
        jail.set_env("AIPROD_VEO_ACCESS_TOKEN", "ya29.old");
        let s = Settings::load(None).expect("loads");
        assert_eq!(s.vertex.vertex_project.as_deref(), Some("acme"));
        assert_eq!(s.vertex.vertex_location, "europe-west4");
        assert_eq!(s.vertex.base_url(), "http://127.0.0.1:9003");
        assert_eq!(
            s.vertex
                .vertex_access_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            Some("ya29.old".to_owned())
        );
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.create_file("aiprod.toml", "veo_location = \"asia-east1\"\n")?;
        let s = Settings::load(Some(Path::new("aiprod.toml"))).expect("loads");
        assert_eq!(s.vertex.vertex_location, "asia-east1");
        Ok(())
    });
}

#[test]
fn the_vertex_defaults_hold_without_any_setting() {
    figment::Jail::expect_with(|_| {
        let s = Settings::load(None).expect("loads");
        assert_eq!(s.vertex.vertex_location, "us-central1");
        assert_eq!(
            s.vertex.base_url(),
            "https://us-central1-aiplatform.googleapis.com"
        );
        assert!(s.vertex.vertex_project.is_none());
        assert_eq!(s.models.planner, PlannerKind::Rules);
        assert_eq!(s.models.keyframes, KeyframeKind::Simulated);
        assert_eq!(s.models.imagen_usd_per_image.micros(), 20_000);
        Ok(())
    });
}

#[test]
fn an_old_name_beside_its_new_one_stops_the_start_naming_the_new_one() {
    for (old, new) in [
        ("AIPROD_VEO_PROJECT", "AIPROD_VERTEX_PROJECT"),
        ("AIPROD_VEO_LOCATION", "AIPROD_VERTEX_LOCATION"),
    ] {
        figment::Jail::expect_with(|jail| {
            jail.set_env(old, "europe-west4");
            jail.set_env(new, "us-east1");
            let e = Settings::load(None).expect_err("both set").to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(new) && e.contains(old), "{e}");
            Ok(())
        });
    }
}

#[test]
fn model_settings_come_from_their_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_VERTEX_PROJECT", "acme");
        jail.set_env("AIPROD_PLANNER", "gemini");
        jail.set_env("AIPROD_KEYFRAMES", "imagen");
        jail.set_env("AIPROD_QA_SEMANTIC", "gemini");
        jail.set_env("AIPROD_QA_SEMANTIC_ON_FAIL", "accept");
        jail.set_env("AIPROD_QA_SEMANTIC_THRESHOLD", "6.5");
        jail.set_env("AIPROD_MODEL_TIMEOUT_MS", "2500");
        jail.set_env("AIPROD_MODEL_CACHE_TTL_S", "0");
        jail.set_env("AIPROD_GEMINI_OUTPUT_USD_PER_MTOK", "10");
        jail.set_env("AIPROD_IMAGEN_USD_PER_IMAGE", "0.04");
        let s = Settings::load(None).expect("loads");
        let m = &s.models;
        assert_eq!(m.planner, PlannerKind::Gemini);
        assert_eq!(m.keyframes, KeyframeKind::Imagen);
        assert_eq!(m.qa_semantic, SemanticQaKind::Gemini);
        assert_eq!(m.qa_semantic_on_fail, OnSemanticFail::Accept);
        assert_eq!(m.qa_semantic_threshold, 6.5);
        assert_eq!(m.model_timeout, std::time::Duration::from_millis(2500));
        assert!(m.model_cache_ttl.is_zero());
        assert_eq!(m.gemini_output_usd_per_mtok.micros(), 10_000_000);
        assert_eq!(m.imagen_usd_per_image.micros(), 40_000);
        Ok(())
    });
}

#[test]
fn a_bad_model_choice_names_its_variable() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_PLANNER", "oracle");
        let e = Settings::load(None)
            .expect_err("no such planner")
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("planner") && e.contains("oracle"), "{e}");
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_QA_SEMANTIC_THRESHOLD", "11");
        let e = Settings::load(None).expect_err("out of range").to_string();
        assert!(e.contains("AIPROD_QA_SEMANTIC_THRESHOLD"), "{e}");
        Ok(())
    });
}

#[test]
fn a_vertex_model_without_a_project_is_refused() {
    for (key, value) in [
        ("AIPROD_PLANNER", "gemini"),
        ("AIPROD_KEYFRAMES", "imagen"),
        ("AIPROD_QA_SEMANTIC", "gemini"),
    ] {
        figment::Jail::expect_with(|jail| {
            jail.set_env(key, value);
            let e = Settings::load(None).expect_err("no project").to_string();
            assert!(
                e.contains(&format!("{key}={value}")) && e.contains("AIPROD_VERTEX_PROJECT"),
                "{e}"
            );
            Ok(())
        });
    }
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_KEYFRAMES", "replicate");
        let e = Settings::load(None).expect_err("no token").to_string();
        assert!(e.contains("AIPROD_REPLICATE_API_TOKEN"), "{e}");
        jail.set_env("AIPROD_REPLICATE_API_TOKEN", "r8_x");
        Settings::load(None).expect("a token is enough");
        Ok(())
    });
}
