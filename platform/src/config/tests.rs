//! The settings' tests: defaults, ranges, and how the file and the environment combine.

// figment's Jail returns its large error type by design.
#![allow(clippy::result_large_err)]
use super::*;
use aiprod_domain::BackendName;

#[test]
fn defaults_are_valid() {
    Settings::default()
        .validate()
        .expect("defaults must validate");
}

#[test]
fn out_of_range_values_are_named() {
    let mut s = Settings::default();
    s.worker.worker_concurrency = 0;
    let e = s.validate().expect_err("0 workers").to_string();
    assert!(e.contains("AIPROD_WORKER_CONCURRENCY"), "{e}");
    let mut s = Settings::default();
    s.backends.sim_failure_rate = 1.5;
    assert!(
        s.validate()
            .expect_err("rate")
            .to_string()
            .contains("AIPROD_SIM_FAILURE_RATE")
    );
}

#[test]
fn environment_overrides_file_and_defaults() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "aiprod.toml",
            "worker_concurrency = 8\nsim_latency_ms = 10\n",
        )?;
        jail.set_env("AIPROD_SIM_LATENCY_MS", "5");
        jail.set_env("AIPROD_BACKENDS__REPLICATE__PER_SECOND_USD", "0.06");
        jail.set_env("DATABASE_URL", "postgres://x@localhost/db");
        jail.set_env("AIPROD_FORBIDDEN_WORDS", "gore, blood");
        let s = Settings::load(Some(Path::new("aiprod.toml"))).expect("loads");
        assert_eq!(s.worker.worker_concurrency, 8);
        assert_eq!(s.backends.sim_latency, std::time::Duration::from_millis(5));
        assert_eq!(
            s.backends
                .prices
                .profile(BackendName::Replicate)
                .per_second_usd
                .micros(),
            60_000
        );
        assert!(s.database_url.is_some());
        assert_eq!(s.worker.forbidden_words, ["gore", "blood"]);
        Ok(())
    });
}

#[test]
fn backend_credentials_and_routing_come_from_their_documented_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_RUNWAY_API_KEY", "key_1");
        jail.set_env("AIPROD_RUNWAY_BASE_URL", "http://127.0.0.1:9001");
        jail.set_env("AIPROD_REPLICATE_API_TOKEN", "r8_1");
        jail.set_env("AIPROD_REPLICATE_BASE_URL", "http://127.0.0.1:9002");
        jail.set_env("AIPROD_VERTEX_PROJECT", "acme");
        jail.set_env("AIPROD_VERTEX_LOCATION", "europe-west4");
        jail.set_env("AIPROD_VERTEX_BASE_URL", "http://127.0.0.1:9003");
        jail.set_env("AIPROD_FALLBACK_ORDER", "veo3, replicate");
        let s = Settings::load(None).expect("loads");
        assert!(s.runway.runway_api_key.is_some());
        assert_eq!(s.runway.runway_base_url, "http://127.0.0.1:9001");
        assert!(s.replicate.replicate_api_token.is_some());
        assert_eq!(s.vertex.vertex_project.as_deref(), Some("acme"));
        assert_eq!(s.vertex.vertex_location, "europe-west4");
        assert_eq!(
            s.backends.fallback_order,
            [BackendName::Veo3, BackendName::Replicate]
        );
        // Secrets never appear when settings are printed.
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("key_1") && !shown.contains("r8_1"),
            "{shown}"
        );
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_FALLBACK_ORDER", "runway,sora");
        let e = Settings::load(None)
            .expect_err("unknown backend")
            .to_string();
        assert!(e.contains("unknown backend `sora`"), "{e}");
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_RUNWAY_APIKEY", "typo");
        let e = Settings::load(None)
            .expect_err("a misspelt setting")
            .to_string();
        assert!(e.contains("runway_apikey"), "{e}");
        Ok(())
    });
}

#[test]
fn an_empty_or_short_admin_token_stops_the_start() {
    for bad in ["", "short", "31-characters-is-one-too-few-00"] {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIPROD_ADMIN_TOKEN", bad);
            let e = Settings::load(None).expect_err("a weak token").to_string();
            assert!(e.contains("AIPROD_ADMIN_TOKEN"), "{e}");
            assert!(
                !e.contains(bad.trim()) || bad.is_empty(),
                "the token leaked: {e}"
            );
            Ok(())
        });
    }
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_ADMIN_TOKEN", "x".repeat(32));
        assert!(Settings::load(None).expect("loads").admin_token.is_some());
        Ok(())
    });
}

#[test]
fn a_bad_value_stops_the_start_with_one_line() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("AIPROD_WORKER_CONCURRENCY", "many");
        let e = Settings::load(None).expect_err("not a number").to_string();
        assert!(!e.contains('\n'));
        assert!(e.contains("worker_concurrency"), "{e}");
        Ok(())
    });
}

#[test]
fn how_a_backend_is_billed_comes_from_its_price_variables_and_is_checked_at_start() {
    figment::Jail::expect_with(|jail| {
        // A float in the environment is still an exact price.
        jail.set_env(
            "AIPROD_BACKENDS__REPLICATE__PER_HARDWARE_SECOND_USD",
            "0.001525",
        );
        let s = Settings::load(None).expect("loads");
        let replicate = s.backends.prices.profile(BackendName::Replicate);
        assert_eq!(replicate.billing, aiprod_domain::Billing::HardwareSecond);
        assert_eq!(replicate.per_hardware_second_usd.micros(), 1_525);
        // The old variables still set the estimate beside it.
        assert_eq!(replicate.per_second_usd.micros(), 50_000);

        jail.set_env("AIPROD_BACKENDS__VEO3__BILLING", "hardware_second");
        let e = Settings::load(None).expect_err("veo reports no hardware time");
        assert!(
            e.to_string().contains("AIPROD_BACKENDS__VEO3__BILLING"),
            "{e}"
        );
        jail.set_env("AIPROD_BACKENDS__VEO3__BILLING", "video_second");
        jail.set_env(
            "AIPROD_BACKENDS__REPLICATE__PER_HARDWARE_SECOND_USD",
            "-0.001",
        );
        let e = Settings::load(None).expect_err("a negative price");
        assert!(e.to_string().contains("AIPROD_BACKENDS__REPLICATE"), "{e}");
        jail.set_env("AIPROD_BACKENDS__REPLICATE__BILLING", "per_frame");
        assert!(Settings::load(None).is_err(), "an unknown billing");
        Ok(())
    });
}
