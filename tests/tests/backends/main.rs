//! The provider clients against local stubs that answer as ARCHITECTURE.md's section on the
//! providers describes, first call by call, then through the worker's render protocol over a
//! real database; and a refused client image, which no backend hears of. The model clients
//! (Gemini, the image models) are tested the same way, call by call.

#![allow(missing_docs)]

mod caching;
mod clients;
mod images;
mod judging;
mod models;
mod planning;
mod protocol;
mod qa;
mod true_costs;

use std::sync::Arc;
use std::time::Duration;

use aiprod_backends::{
    Api, Backend, Image, Poll, RemoteHandle, Replicate, Runway, ShotRequest, Veo3,
};
use aiprod_domain::BackendName;
use aiprod_platform::Settings;
use aiprod_tests::stubs::{Provider, Stub};
use secrecy::SecretString;

fn settings_for(provider: Provider, uri: &str) -> Settings {
    let mut s = Settings::default();
    match provider {
        Provider::Runway => {
            s.runway.runway_base_url = uri.into();
            s.runway.runway_api_key = Some(SecretString::from("key_test"));
            s.runway.runway_poll = Duration::from_millis(10);
        }
        Provider::Veo => {
            s.vertex.vertex_base_url = Some(uri.into());
            s.vertex.vertex_project = Some("proj".into());
            s.vertex.vertex_access_token = Some(SecretString::from("ya29.test"));
            s.veo.veo_poll = Duration::from_millis(10);
        }
        Provider::Replicate => {
            s.replicate.replicate_base_url = uri.into();
            s.replicate.replicate_api_token = Some(SecretString::from("r8_test"));
            s.replicate.replicate_poll = Duration::from_millis(10);
        }
    }
    s
}

fn client(provider: Provider, stub: &Stub, timeout: Duration) -> Arc<dyn Backend> {
    let s = settings_for(provider, &stub.uri());
    match provider {
        Provider::Runway => Arc::new(Runway::new(
            Api::new(BackendName::Runway, timeout).expect("client"),
            &s.runway,
            &s.backends.prices.runway.model,
        )),
        Provider::Veo => Arc::new(
            Veo3::new(
                Api::new(BackendName::Veo3, timeout).expect("client"),
                &s.vertex,
                &s.veo,
                &s.backends.prices.veo3.model,
            )
            .expect("veo client"),
        ),
        Provider::Replicate => Arc::new(Replicate::new(
            Api::new(BackendName::Replicate, timeout).expect("client"),
            &s.replicate,
        )),
    }
}

fn shot(seconds: u32) -> ShotRequest {
    ShotRequest {
        shot: 0,
        prompt: "A fox runs through snow.".into(),
        duration_s: seconds,
        image: Image::Inline {
            mime: "image/png".into(),
            data: vec![0x89, b'P', b'N', b'G'],
        },
        seed: 42,
        cancel_after: Some(Duration::from_secs(600)),
    }
}

const ALL: [Provider; 3] = [Provider::Runway, Provider::Veo, Provider::Replicate];

async fn poll_to_end(b: &dyn Backend, h: &RemoteHandle) -> Vec<Poll> {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let p = b.poll(h).await.expect("a poll answer");
        let end = matches!(p, Poll::Done(..) | Poll::Failed(..));
        seen.push(p);
        if end {
            break;
        }
    }
    seen
}
