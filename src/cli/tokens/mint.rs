//! `mcp-gateway tokens mint`: access tokens made by the operator (a service account, a load
//! test), signed with the current key and put on the allow-list like any the server issues.

use std::io::Write;
use std::time::Duration;

use super::{MintArgs, now};
use crate::audit::{Events, Kind};
use crate::cli::{Cli, CliError, CliResult};
use crate::store::TokenRecord;
use crate::token::{MintRequest, mint};

pub(super) async fn mint_token(cli: &Cli, args: &MintArgs) -> CliResult {
    let settings = cli.settings()?;
    for resource in &args.resource {
        let url = url::Url::parse(resource)
            .map_err(|e| CliError::Failed(format!("--resource {resource:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.fragment().is_some() {
            return Err(CliError::Failed(format!(
                "--resource {resource:?}: must be an http(s) URL without fragment (RFC 8707)"
            )));
        }
    }
    let now = now();
    let lifetime = args
        .lifetime
        .map(Duration::from_secs)
        .unwrap_or(settings.access_token_lifetime);
    let request = MintRequest {
        subject: args.user_id.clone(),
        username: args.user.clone(),
        email: args.email.clone(),
        name: args.name.clone(),
        groups: args.groups.clone(),
        client_id: args.client_id.clone(),
        scope: args.scope.split_whitespace().collect::<Vec<_>>().join(" "),
        audience: args.resource.clone(),
        lifetime,
        amr: args.amr.clone(),
        cert_thumbprint: args.bind_cert_thumbprint.clone(),
        dpop_jkt: args.bind_dpop_jkt.clone(),
        bind_ip: args.bind_ip.map(|ip| ip.to_string()),
        bind_ua: args
            .bind_ua
            .as_deref()
            .map(|ua| crate::token::sha256_b64url(ua.as_bytes())),
        custom_claims: settings.custom_claims.clone(),
        subject_type: Default::default(),
    };
    let upstream = match &args.upstream_token {
        None => None,
        Some(token) => {
            let sealer = settings.upstream_sealer().ok_or_else(|| {
                CliError::Failed(
                    "--upstream-token needs UPSTREAM_TOKEN_KEY or the signing key".into(),
                )
            })?;
            let session = crate::records::UpstreamSession {
                provider: "operator".into(),
                access_token: token.clone(),
                refresh_token: None,
                expires_at: None,
            };
            Some((sealer, session))
        }
    };
    let store = cli.store(&settings).await?;
    let count = args.count as usize;
    // Signing dominates (RSA): on every core, in batches that are recorded as they are made.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(10_000);
        let per_thread = batch.div_ceil(threads);
        let minted: Vec<crate::token::MintedToken> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let n = per_thread.min(batch.saturating_sub(t * per_thread));
                    let (settings, request) = (&settings, &request);
                    scope.spawn(move || {
                        (0..n)
                            .map(|_| mint(&settings.keys, &settings.issuer, request.clone(), now))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Ok(Vec::new())))
                .collect::<Result<Vec<Vec<_>>, _>>()
                .map(|v| v.into_iter().flatten().collect())
        })
        .map_err(|e| CliError::Failed(format!("cannot mint: {e}")))?;
        for chunk in minted.chunks(200) {
            let records: Vec<TokenRecord> = chunk
                .iter()
                .map(|m| {
                    let mut record = TokenRecord::for_claims(&m.claims, None);
                    record.grant = Some("mint".into());
                    record.upstream = upstream
                        .as_ref()
                        .map(|(sealer, session)| session.seal(sealer, &m.claims.jti));
                    record
                })
                .collect();
            let events: Vec<Events> = records
                .iter()
                .map(|r| {
                    Events::one(
                        cli.event(Kind::TokenMinted)
                            .user(&r.username)
                            .user_id(&r.user_id)
                            .client(&r.client_id)
                            .jti(&r.jti)
                            .scope(&r.scope)
                            .grant("mint"),
                    )
                })
                .collect();
            let writes = records
                .iter()
                .zip(&events)
                .map(|(r, e)| store.put_token(r, now, e));
            for result in futures_util::future::join_all(writes).await {
                result.map_err(|e| CliError::Failed(format!("cannot record the token: {e}")))?;
            }
        }
        for token in &minted {
            writeln!(out, "{}", token.token)
                .map_err(|e| CliError::Failed(format!("cannot write: {e}")))?;
        }
        done += minted.len().max(1);
    }
    out.flush()
        .map_err(|e| CliError::Failed(format!("cannot write: {e}")))?;
    Ok(())
}
