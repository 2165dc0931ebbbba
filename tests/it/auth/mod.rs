//! The authorization server over HTTP: the whole code flow against the fake GitHub, each fix
//! of the original gateway with the attack it stops, RFC 7592, revoke/introspect ownership.

mod cimd;
mod cloud;
mod enterprise;
mod entitlements;
mod login;
mod oidc;
mod registration;
mod tokens;
