//! # MCP OAuth Gateway
//!
//! An OAuth 2.1 gateway that puts login in front of any MCP (Model Context Protocol) server
//! without the MCP server knowing anything about OAuth. A reverse proxy (Traefik, Caddy, nginx)
//! asks [`verify`] about every MCP request ("ForwardAuth"); the answer comes from in-memory
//! caches when warm, with no I/O.
//!
//! ## Module map
//!
//! | module | responsibility |
//! |---|---|
//! | [`config`] | raw settings (TOML file + environment) parsed into validated [`config::Settings`] |
//! | [`policy`] | allow-lists, host patterns, scope rules and hierarchies, per-tool rules (pure types, evaluated at ForwardAuth) |
//! | [`token`] | access-token claims, signing and verification keys, JWKS, mint and validate (pure, no I/O) |
//! | [`store`] | the [`store::Store`] trait, its Redis (scripts, Sentinel) and in-memory implementations, key names |
//! | [`records`] | what the authorization server stores, one type per record with its key and load/save/take; the CLI uses the same |
//! | [`forwarded`] | what the proxy's forwarding headers say (client address, certificate, path), for both services |
//! | [`auth`] | the authorization server: metadata, registration, authorize + consent, GitHub login, token, revoke, introspect; `session` and `login` shared by the endpoints |
//! | [`verify`] | the ForwardAuth service: `/verify`, caches, revocation feed, protected-resource metadata |
//! | [`cli`] | the operator CLI `mcp-gateway` |
//! | [`service`] | what both service binaries do around their server: settings, store, serving |
//! | [`telemetry`] | logging setup |
//! | [`clock`] | the injectable clock every time decision goes through |
//! | [`rfc3986`] | the steps of URI normalisation the request path and resource URIs share (percent-escapes, dot segments) |
//! | [`seal`] | sealing (AES-256-GCM) and the one key derivation (HKDF-SHA256) every secret at rest uses |
//! | [`tls`] | verify's TLS (ALPN h2, certificates re-read when they change) and the private CA `mcp-gateway tls generate` writes |
//! | [`audit`] | the security events' vocabulary, the batches the store writes with each change, and where written events are reported |
//!
//! ## Trust model
//!
//! * Only the proxy talks to `mcp-gateway-verify`. The proxy strips client-supplied
//!   `X-Forwarded-*` headers (`trustForwardHeader: false` in Traefik) and sets its own, so the
//!   resource (`X-Forwarded-Proto` + `X-Forwarded-Host`) is the proxy's word. `Host` is never
//!   used for a decision: under Traefik and nginx it names the gateway, not the MCP server.
//! * The client IP is the right-most `X-Forwarded-For` hop that is not a configured trusted
//!   proxy; anything to its left was written by the client and is ignored.
//! * A token is accepted only when its signature verifies with the key its `kid` names, with that
//!   key's own algorithm (never `none`, never HMAC keyed with a public key), its issuer is ours,
//!   its audience names the resource being accessed, and its `jti` is still on the allow-list in
//!   the store. Revocation deletes the allow-list entry and is broadcast to every verify replica.
//! * When the store cannot be asked, verify answers 503, never 401: a 401 would send every MCP
//!   client into a new login.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod forwarded;
pub mod policy;
pub mod records;
pub mod rfc3986;
pub mod seal;
pub mod service;
pub mod slots;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod verify;
