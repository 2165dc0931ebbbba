//! The `id_token` checks (OpenID Connect Core §3.1.3.7): an asymmetric algorithm the provider
//! advertises, the signature by the key its `kid` names (an unknown `kid` refetches the JWKS,
//! at most every [`super::JWKS_REFETCH_INTERVAL`]), `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`.

use jsonwebtoken::Validation;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::{Discovery, LEEWAY, MAX_ID_TOKEN_AGE, OidcClient};
use crate::auth::jwks::{Unverified, algorithm_name, decode};
use crate::auth::upstream::UpstreamError;

impl OidcClient {
    /// The `id_token`'s claims once every check passed (OpenID Connect Core §3.1.3.7).
    /// `nonce`: the login's; `None` for a refresh (§12.2: the provider need not send one).
    pub async fn validate_id_token(
        &self,
        discovery: &Discovery,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let refused = |why: String| UpstreamError::Refused(format!("id_token: {why}"));
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|_| refused("not a signed JWT".into()))?;
        let alg_name = algorithm_name(header.alg)
            .ok_or_else(|| refused(format!("alg {:?} is not accepted", header.alg)))?;
        let advertised = &discovery.id_token_signing_alg_values_supported;
        let advertised_ok = if advertised.is_empty() {
            alg_name == "RS256"
        } else {
            advertised.iter().any(|a| a == alg_name)
        };
        if !advertised_ok {
            return Err(refused(format!(
                "alg {alg_name} is not one the provider advertises"
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.client_id.as_str()]);
        let kid = header.kid.as_deref();
        let claims: Map<String, Value> =
            decode(id_token, header.alg, kid, &validation, |refetch| {
                self.keys(discovery, refetch)
            })
            .await?
            .map_err(|why| {
                use jsonwebtoken::errors::ErrorKind as K;
                refused(match why {
                    Unverified::NoKey => {
                        format!("no key of the provider fits alg {alg_name} and kid {kid:?}")
                    }
                    _ => match why.kind() {
                        Some(K::ExpiredSignature) => "it has expired",
                        Some(K::InvalidAudience) => "aud does not name this gateway's client_id",
                        Some(K::InvalidIssuer) => "iss is not OIDC_ISSUER",
                        Some(K::ImmatureSignature) => "it is not valid yet",
                        Some(K::MissingRequiredClaim(_)) => "exp, iss, aud and sub are required",
                        _ => "the signature does not verify",
                    }
                    .into(),
                })
            })?;
        let aud_count = match claims.get("aud") {
            Some(Value::Array(list)) => list.len(),
            _ => 1,
        };
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.settings.client_id => {
                return Err(refused("azp names another client".into()));
            }
            None if aud_count > 1 => {
                return Err(refused("several audiences and no azp".into()));
            }
            _ => {}
        }
        let now = crate::clock::Clock::now_unix(&crate::clock::SystemClock);
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| refused("iat is required".into()))?;
        if iat > now + LEEWAY as i64 || iat < now - MAX_ID_TOKEN_AGE {
            return Err(refused("iat is not recent".into()));
        }
        if let Some(expected) = nonce {
            let sent = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            if !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(refused("the nonce is not this login's".into()));
            }
        }
        Ok(claims)
    }
}
