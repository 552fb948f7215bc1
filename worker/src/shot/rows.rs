//! A job's render rows as the renderer reads them: grouped by shot, and a downloaded try as
//! the shot it delivered.

use std::collections::BTreeMap;

use aiprod_backends::RenderedShot;
use aiprod_domain::Money;
use aiprod_store::RenderTask;

/// The shot a downloaded try delivered, from its row.
pub(super) fn rendered(t: &RenderTask) -> RenderedShot {
    RenderedShot {
        index: t.shot as usize,
        backend: Some(t.backend),
        remote_id: t.remote_id.clone().unwrap_or_default(),
        uri: t.artifact_uri.clone().unwrap_or_default(),
        duration_s: t.duration_s as u32,
        cost: Money::from_micros(t.cost_micros.unwrap_or(t.estimated_cost_micros)),
        qa: t.qa.clone(),
    }
}

/// A job's render rows, by shot.
pub(crate) fn by_shot(tasks: Vec<RenderTask>) -> BTreeMap<i32, Vec<RenderTask>> {
    let mut map: BTreeMap<i32, Vec<RenderTask>> = BTreeMap::new();
    for t in tasks {
        map.entry(t.shot).or_default().push(t);
    }
    map
}
