# syntax=docker/dockerfile:1
#
# The one `aiprod` binary (api, worker, scheduler, migrate, jobs) on a slim Debian, non-root
# runtime with ffmpeg. Build: docker build -t aiprod .
#
# Stages: `chef` has the toolchain and cargo-chef; `planner` turns the workspace into a recipe
# of its dependencies; `builder` compiles those dependencies in a layer of their own (kept
# until Cargo.lock or a manifest changes), then the workspace. No HEALTHCHECK: the image has
# no HTTP client, and Kubernetes probes /healthz and /readyz itself.

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

# Why not distroless any more: workers check and assemble video with the system's ffmpeg and
# ffprobe (README, "Media"), and distroless has no package manager to add them, nor the
# libraries they link. So: Debian 12 slim (the builder's release, so glibc matches), with only
# ffmpeg, a font for the simulated clips' labels and CA certificates (HTTPS to the providers
# and Google); user 65532 ("nonroot") as before.
FROM debian:bookworm-slim AS runtime
# Not pinned to exact versions: Debian's security updates replace them in the archive, and a
# pin would break the next build; the bookworm tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg fonts-dejavu-core ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=builder /build/aiprod /usr/local/bin/aiprod
USER 65532:65532
# api: 8080; worker: 9464; scheduler: 9465 (each with /healthz, /readyz and /metrics).
EXPOSE 8080 9464 9465
ENTRYPOINT ["/usr/local/bin/aiprod"]
CMD ["api", "--listen", "0.0.0.0:8080"]
