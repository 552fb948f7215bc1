# syntax=docker/dockerfile:1
#
# The one `aiprod` binary (api, worker, scheduler, migrate, jobs) on a distroless, non-root
# runtime. Build: docker build -t aiprod .
#
# Stages: `chef` has the toolchain and cargo-chef; `planner` turns the workspace into a recipe
# of its dependencies; `builder` compiles those dependencies in a layer of their own (kept
# until Cargo.lock or a manifest changes), then the workspace. No HEALTHCHECK: the image has
# no shell or HTTP client, and Kubernetes probes /healthz and /readyz itself.

# The toolchain CI tests with (rust-version in Cargo.toml is only the floor). Debian 12 in the
# builder and in the runtime: the runtime's glibc must be at least the builder's.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS chef
# rustls uses aws-lc-rs, whose C part builds with the image's gcc (no cmake, clang or Go).
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# No query! macro reaches a database while compiling; migrations/ is embedded by
# sqlx::migrate! and must be in the build context.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked -p aiprod --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p aiprod --bin aiprod \
    && cp target/release/aiprod /build/aiprod

# glibc, libgcc and CA certificates (HTTPS to the providers and Google), nothing else; user
# 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /build/aiprod /usr/local/bin/aiprod
USER 65532:65532
# api: 8080; worker: 9464; scheduler: 9465 (each with /healthz, /readyz and /metrics).
EXPOSE 8080 9464 9465
ENTRYPOINT ["/usr/local/bin/aiprod"]
CMD ["api", "--listen", "0.0.0.0:8080"]
