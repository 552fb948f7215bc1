//! Workers' egress is closed but for what they need: DNS, PostgreSQL, HTTPS to the internet (never
//! to the private, shared, loopback or link-local ranges), and on GKE the metadata server's one
//! port that Workload Identity uses. Checked on the rendered base and gke overlay.

use std::net::Ipv4Addr;

use anyhow::{Context, ensure};
use serde_json::Value;

use crate::{gke, kustomize, name, named, of_kind, yaml_docs};

/// Ranges no worker may reach over HTTPS: a client image's link into them is an attack.
const INTERNAL: [&str; 7] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];

/// An IPv4 CIDR as (network, prefix length).
fn cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    (len <= 32).then_some((u32::from(ip), len))
}

/// Whether CIDR `outer` contains all of `inner`.
fn contains(outer: (u32, u32), inner: (u32, u32)) -> bool {
    let mask = |len: u32| if len == 0 { 0 } else { u32::MAX << (32 - len) };
    outer.1 <= inner.1 && (inner.0 & mask(outer.1)) == (outer.0 & mask(outer.1))
}

/// Whether `rule` lets traffic reach any address of IPv4 range `range`: through an ipBlock that
/// overlaps it without excepting all of it, or with no `to` at all (any address).
fn reaches(rule: &Value, range: &str) -> anyhow::Result<bool> {
    let range = cidr(range).context("a range")?;
    let Some(to) = rule["to"].as_array() else {
        return Ok(true);
    };
    for peer in to {
        let Some(block) = peer["ipBlock"]["cidr"].as_str() else {
            continue;
        };
        let Some(block) = cidr(block) else {
            continue; // IPv6
        };
        let overlaps = contains(block, range) || contains(range, block);
        let excepted = peer["ipBlock"]["except"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|e| e.as_str().and_then(cidr))
            .any(|e| contains(e, range));
        if overlaps && !excepted {
            return Ok(true);
        }
    }
    Ok(false)
}

fn ports(rule: &Value) -> Vec<(String, u64)> {
    rule["ports"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|p| {
            (
                p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                p["port"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The workers' egress policy in `docs`, checked against what they need; returns its rules.
fn worker_policy(docs: &[Value]) -> anyhow::Result<Vec<Value>> {
    let worker = named(docs, "Deployment", "aiprod-worker")?;
    let labels = &worker["spec"]["template"]["metadata"]["labels"];
    let policies: Vec<&Value> = of_kind(docs, "NetworkPolicy")
        .into_iter()
        .filter(|p| {
            p["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
        })
        .collect();
    ensure!(
        policies.len() == 1,
        "one NetworkPolicy selects the worker pods, found {}",
        policies.len()
    );
    let policy = policies[0];
    let n = name(policy);
    ensure!(
        policy["spec"]["policyTypes"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "Egress")),
        "{n}: restricts egress"
    );
    let rules = policy["spec"]["egress"]
        .as_array()
        .context("egress rules")?
        .clone();
    for rule in &rules {
        ensure!(
            !ports(rule).is_empty(),
            "{n}: every egress rule names its ports, none opens all: {rule}"
        );
    }
    let allows = |proto: &str, port: u64| {
        rules
            .iter()
            .any(|r| ports(r).contains(&(proto.to_owned(), port)))
    };
    ensure!(allows("UDP", 53) && allows("TCP", 53), "{n}: DNS");
    ensure!(allows("TCP", 5432), "{n}: PostgreSQL");
    let https: Vec<&Value> = rules
        .iter()
        .filter(|r| ports(r).contains(&("TCP".into(), 443)))
        .collect();
    ensure!(
        https
            .iter()
            .any(|r| reaches(r, "8.8.8.8/32").unwrap_or(false)),
        "{n}: HTTPS to the internet"
    );
    for rule in &rules {
        let only_dns = ports(rule).iter().all(|(_, p)| *p == 53);
        let only_pg = ports(rule).iter().all(|(_, p)| *p == 5432);
        if only_dns || only_pg {
            continue;
        }
        // The metadata server's port 80 is checked apart.
        if is_metadata_rule(rule) {
            continue;
        }
        for range in INTERNAL {
            ensure!(
                !reaches(rule, range)?,
                "{n}: a rule other than DNS and PostgreSQL reaches {range}: {rule}"
            );
        }
    }
    Ok(rules)
}

/// Whether a rule opens exactly the metadata server's port 80.
fn is_metadata_rule(rule: &Value) -> bool {
    ports(rule) == [("TCP".to_owned(), 80)]
        && rule["to"].as_array().is_some_and(|to| {
            !to.is_empty()
                && to
                    .iter()
                    .all(|p| p["ipBlock"]["cidr"] == "169.254.169.254/32")
        })
}

#[test]
fn worker_egress_is_dns_postgres_and_public_https_only() -> anyhow::Result<()> {
    let base = yaml_docs(&kustomize("k8s/base")?)?;
    let rules = worker_policy(&base)?;
    ensure!(
        !rules.iter().any(is_metadata_rule),
        "the cloud-neutral base opens no metadata server"
    );
    let gke_rules = worker_policy(gke())?;
    ensure!(
        gke_rules.iter().any(is_metadata_rule),
        "on GKE, workers reach the metadata server's port 80 (Workload Identity's tokens)"
    );
    ensure!(
        gke_rules
            .iter()
            .filter(|r| reaches(r, "169.254.169.254/32").unwrap_or(true))
            .all(|r| is_metadata_rule(r) || ports(r).iter().all(|(_, p)| *p == 53 || *p == 5432)),
        "only port 80 of the metadata server is open"
    );
    Ok(())
}

#[test]
fn the_cidr_checks_catch_an_open_rule() {
    let open: Value =
        serde_json::json!({"ports": [{"port": 443}], "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]});
    assert!(reaches(&open, "10.1.2.0/24").unwrap_or(false));
    let closed: Value = serde_json::json!({"ports": [{"port": 443}], "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]});
    assert!(!reaches(&closed, "10.1.2.0/24").unwrap_or(true));
    assert!(reaches(&closed, "8.8.8.8/32").unwrap_or(false));
    let anywhere: Value = serde_json::json!({"ports": [{"port": 443}]});
    assert!(reaches(&anywhere, "169.254.169.254/32").unwrap_or(false));
}
