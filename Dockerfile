# syntax=docker/dockerfile:1
#
# MCP OAuth gateway: one image, three binaries (docs/deploy.md).
#
#   docker build -t mcp-oauth-gateway:local .
#   docker run --rm mcp-oauth-gateway:local mcp-gateway keys generate     # JWT_ALGORITHM, JWT_PRIVATE_KEY_B64
#   command: ["mcp-gateway-auth"]    listens on :8080 (LISTEN_ADDR)
#   command: ["mcp-gateway-verify"]  listens on :8081
#
# Runtime: distroless cc (glibc, libgcc, CA certificates; no shell, no package manager), user
# 65532 (nonroot). The binaries need nothing else: TLS is rustls, templates are compiled in.
# Health: the image carries /usr/local/bin/mcp-gateway-healthcheck (deploy/docker/healthcheck.rs,
# standard library only), because distroless has no curl or wget. With no argument it probes
# /health on the port of LISTEN_ADDR (else 8081, then 8080); give a URL to probe something else,
# e.g. `mcp-gateway-healthcheck http://127.0.0.1:8081/ready` (docker-compose.yml does).
# Kubernetes ignores HEALTHCHECK and uses the httpGet probes in deploy/kubernetes/.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /build

# Dependency layer: compile every dependency against stub sources, so that changing src/ does
# not rebuild them. Rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/bin/mcp-gateway.rs \
 && cp src/bin/mcp-gateway.rs src/bin/mcp-gateway-auth.rs \
 && cp src/bin/mcp-gateway.rs src/bin/mcp-gateway-verify.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bins \
 && rm -rf src target/release/.fingerprint/mcp-oauth-gateway-* target/release/deps/mcp_oauth_gateway-* \
           target/release/deps/libmcp_oauth_gateway-* target/release/deps/mcp_gateway*

# The health probe: one file, standard library only.
COPY deploy/docker/healthcheck.rs deploy/docker/healthcheck.rs
RUN rustc --edition 2024 -C opt-level=s -C strip=symbols \
      -o /build/mcp-gateway-healthcheck deploy/docker/healthcheck.rs

# The real sources (templates are compiled into the binaries with include_str!).
COPY src ./src
COPY templates ./templates
RUN cargo build --release --locked --bins \
 && mkdir -p /out /tls \
 && cp target/release/mcp-gateway target/release/mcp-gateway-auth target/release/mcp-gateway-verify \
       /build/mcp-gateway-healthcheck /out/ \
 && /out/mcp-gateway --version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="mcp-oauth-gateway" \
      org.opencontainers.image.description="OAuth 2.1 gateway for MCP servers: mcp-gateway-verify (ForwardAuth), mcp-gateway-auth (authorization server), mcp-gateway (CLI)" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/ /usr/local/bin/
# Where `mcp-gateway tls generate` writes verify's certificate in Compose (a named volume
# mounted here takes this folder's owner, so the non-root user can write it).
COPY --from=builder --chown=65532:65532 /tls /var/lib/mcp-gateway/tls
# 65532 = the distroless "nonroot" user; numeric so that runAsNonRoot can check it.
USER 65532:65532
WORKDIR /home/nonroot
ENV LOG_FORMAT=json
EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/mcp-gateway-healthcheck"]
CMD ["mcp-gateway", "--help"]
