//! `grant_type=client_credentials` (RFC 6749 §4.4; MCP's OAuth Client Credentials
//! extension): a client the operator created (`mcp-gateway clients create
//! --client-credentials`; registration can never make one) calls as itself. The subject is
//! `client:{client_id}`, the scope what it asks (else its own) ∩ its own ∩ what
//! `client:{client_id}` is entitled to, the audience the resource it names. No refresh token
//! (§4.4.3): it authenticates again.

use actix_web::{HttpRequest, HttpResponse};

use super::direct::{Direct, grant_scope, issue};
use super::{Form, param};
use crate::auth::params::Resource;
use crate::auth::{AuthState, OAuthError, UpstreamUser};
use crate::policy::{CLIENT_SUBJECT_PREFIX, Identity, Scope};
use crate::records::ClientRecord;
use crate::token::SubjectType;

pub const CLIENT_CREDENTIALS: &str = "client_credentials";

pub async fn grant(
    state: &AuthState,
    req: &HttpRequest,
    client: &ClientRecord,
    form: &Form,
) -> Result<HttpResponse, OAuthError> {
    let resource = param(form, "resource")
        .map(|r| Resource::parse(&state.settings, r).map(Resource::into_string))
        .transpose()
        .map_err(OAuthError::invalid_target)?;
    let id = format!("{CLIENT_SUBJECT_PREFIX}{}", client.client_id);
    let user = UpstreamUser {
        id: id.clone(),
        login: id.clone(),
        name: client.client_name.clone(),
        email: None,
        groups: Vec::new(),
    };
    let who = Identity::of_subject(&id, &id, None, &[], SubjectType::Client);
    let (scope, withheld) = grant_scope(
        state,
        param(form, "scope"),
        client.scope.as_deref(),
        &[client.scope.as_deref().map(Scope::parse)],
        &who,
        OAuthError::invalid_scope,
    )?;
    issue(
        state,
        req,
        Direct {
            user,
            kind: SubjectType::Client,
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            resources: resource.into_iter().collect(),
            amr: vec![client.token_endpoint_auth_method.clone()],
            grant_type: CLIENT_CREDENTIALS,
            withheld,
            once: None,
            issuer: None,
        },
    )
    .await
}
