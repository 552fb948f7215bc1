//! The Kubernetes manifests, rendered by kustomize: they pass strict schema validation, and the
//! properties a safe rollout, a locked-down pod, the workers' closed egress and the autoscaling
//! depend on hold on the rendered objects.

mod network;
mod render;
mod rollout;
mod security;
mod workloads;
