//! What the provider says a render used: Replicate's `metrics.predict_time` read by the client
//! from the number's own text, then, through the worker's protocol, the try charged that figure
//! at the hardware's price (the estimate kept beside it), the day's books still balanced, and
//! the `cost_accuracy` view showing the pair.

use std::time::Duration;

use aiprod_backends::Poll;
use aiprod_domain::HardwareSeconds;
use aiprod_tests::stubs::{Provider, Stub};
use serde_json::json;

use crate::protocol::Rig;
use crate::{ALL, client, poll_to_end, settings_for, shot};

/// The hardware seconds a finished render's last poll carried.
async fn reported(provider: Provider, stub: &Stub) -> Option<HardwareSeconds> {
    // Generous: the first clip a stub serves is made by ffmpeg on a busy machine.
    let b = client(provider, stub, Duration::from_secs(30));
    let h = b.submit(&shot(5)).await.expect("submitted");
    match poll_to_end(b.as_ref(), &h).await.pop() {
        Some(Poll::Done(outputs, seconds)) => {
            assert!(!outputs.is_empty(), "{provider:?}");
            seconds
        }
        other => panic!("{provider:?}: {other:?}"),
    }
}

#[tokio::test]
async fn replicate_reports_the_hardware_seconds_it_bills_digit_for_digit() {
    let stub = Stub::start(Provider::Replicate).await;
    // More digits than a float holds: read through an f64 it would become 0.12345678901234568.
    stub.report_predict_time("0.1234567890123456789");
    let got = reported(Provider::Replicate, &stub).await;
    assert_eq!(
        got.as_ref().map(ToString::to_string).as_deref(),
        Some("0.1234567890123456789")
    );
    stub.report_predict_time("1.5e+2");
    let got = reported(Provider::Replicate, &stub).await;
    assert_eq!(got, HardwareSeconds::parse("150").ok());
    // No figure, or one that is not a number of seconds: the render is still done, unmeasured.
    for text in ["null", "\"41.2\"", "-3.5"] {
        stub.report_predict_time(text);
        assert_eq!(reported(Provider::Replicate, &stub).await, None, "{text}");
    }
    // Runway and Veo bill per second of video and report no hardware time.
    for provider in ALL.into_iter().filter(|p| *p != Provider::Replicate) {
        let stub = Stub::start(provider).await;
        assert_eq!(reported(provider, &stub).await, None, "{provider:?}");
    }
}

#[tokio::test]
async fn a_replicate_try_is_charged_the_providers_figure_and_the_books_still_balance()
-> anyhow::Result<()> {
    let stub = Stub::start(Provider::Replicate).await;
    let settings = settings_for(Provider::Replicate, &stub.uri());
    let price = settings.backends.prices.replicate.per_hardware_second_usd;
    assert_eq!(price.micros(), 1_400, "the seed price of an A100 second");
    let rig = Rig::new(settings).await?;
    stub.report_predict_time("41.2345678");
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "quality_min": 0, "cache": false}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");

    // 41.2345678 s × $0.0014 = $0.05772839492, rounded up to $0.057729; the estimate for a
    // 5 s shot stays 0.01 + 5 × 0.05 = $0.26.
    let row: (String, i64, i64, Option<i64>, Option<String>) = sqlx::query_as(
        "select state::text, estimated_cost_micros, cost_micros, provider_cost_micros,
                provider_seconds::text
           from render_task where job_id = $1",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(
        row,
        (
            "downloaded".to_owned(),
            260_000,
            57_729,
            Some(57_729),
            Some("41.2345678".to_owned())
        )
    );
    let (job_cost, day): (i64, Option<chrono::NaiveDate>) =
        sqlx::query_as("select cost_micros, budget_day from job where id = $1")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!(job_cost, 57_729);

    // The day was charged the figure, and its reservation of the estimate released.
    let day = day.expect("the job is booked on a budget day");
    let audit = aiprod_store::audit_budget_day(&rig.pool, day)
        .await?
        .expect("the day is open");
    assert!(audit.balanced, "{audit:?}");
    assert_eq!((audit.spent_micros, audit.reserved_micros), (57_729, 0));

    let accuracy: (i64, i64, String, String, String, String) = sqlx::query_as(
        "select tries, provider_tries, estimated_usd::text, actual_usd::text,
                actual_to_estimate::text, provider_to_estimate::text
           from cost_accuracy where day = $1 and backend = 'replicate'",
    )
    .bind(day)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(
        accuracy,
        (
            1,
            1,
            "0.260000".to_owned(),
            "0.057729".to_owned(),
            // 57 729 / 260 000 = 0.2220346…
            "0.222035".to_owned(),
            "0.222035".to_owned()
        )
    );
    Ok(())
}
