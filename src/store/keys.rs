//! Redis key names, in one place (DESIGN §5; the seed's `oauth:*` names are the public
//! interface that operators' scripts and backups rely on).

pub const PREFIX: &str = "oauth:";
pub const REVOCATION_CHANNEL: &str = "oauth:revocations";
/// On the revocation channel, a message `family:{id}` says a refresh family was revoked (for
/// a backup running meanwhile); every other message is a revoked access token's `jti`.
pub const FAMILY_REVOCATION_MESSAGE: &str = "family:";
/// A message `marker:{random}` revokes nothing: a backup or restore publishes one and waits
/// for it, and then knows it has heard every revocation published before it (a channel's
/// messages arrive in order).
pub const MARKER_MESSAGE: &str = "marker:";
pub const TOKEN_PREFIX: &str = "oauth:token:";
pub const USER_TOKENS_PREFIX: &str = "oauth:user_tokens:";
pub const CLIENT_TOKENS_PREFIX: &str = "oauth:client_tokens:";
pub const CLIENT_PREFIX: &str = "oauth:client:";
pub const REFRESH_PREFIX: &str = "oauth:refresh:";
pub const FAMILY_PREFIX: &str = "oauth:family:";
pub const FAMILY_REVOKED_PREFIX: &str = "oauth:family_revoked:";
pub const TOKEN_REVOKED_PREFIX: &str = "oauth:token_revoked:";
pub const CLIENT_FAMILIES_PREFIX: &str = "oauth:client_families:";
pub const CONSENT_PREFIX: &str = "oauth:consent:";
pub const CLIENT_CONSENTS_PREFIX: &str = "oauth:client_consents:";
pub const USER_FAMILIES_PREFIX: &str = "oauth:user_families:";
pub const GRANT_RESULT_PREFIX: &str = "oauth:grant_result:";
pub const CLIENT_PENDING_PREFIX: &str = "oauth:client_pending:";
pub const CODE_PREFIX: &str = "oauth:code:";
pub const STATE_PREFIX: &str = "oauth:state:";

pub fn token(jti: &str) -> String {
    format!("{TOKEN_PREFIX}{jti}")
}

pub fn user_tokens(username: &str) -> String {
    format!("{USER_TOKENS_PREFIX}{}", username.to_ascii_lowercase())
}

pub fn client_tokens(client_id: &str) -> String {
    format!("{CLIENT_TOKENS_PREFIX}{client_id}")
}

pub fn client(client_id: &str) -> String {
    format!("oauth:client:{client_id}")
}

pub fn state(state: &str) -> String {
    format!("{STATE_PREFIX}{state}")
}

/// Codes are stored under their SHA-256, never in the clear.
pub fn code(code_hash: &str) -> String {
    format!("{CODE_PREFIX}{code_hash}")
}

/// Refresh tokens are stored under their SHA-256, never in the clear.
pub fn refresh(token_hash: &str) -> String {
    format!("oauth:refresh:{token_hash}")
}

pub fn family(id: &str) -> String {
    format!("oauth:family:{id}")
}

pub fn consent(user: &str, client_id: &str) -> String {
    format!("oauth:consent:{}:{client_id}", user.to_ascii_lowercase())
}

/// The upstream account id a login name was first seen with: one account per name, across
/// every upstream. The name is taken as sent (ASCII case aside), never trimmed.
pub fn login_id(login: &str) -> String {
    format!("oauth:login_id:{}", login.to_ascii_lowercase())
}

pub fn mfa(user: &str) -> String {
    format!("oauth:mfa:{}", user.to_ascii_lowercase())
}

/// A recovery code of `user`'s second factor, by its hash; `mfa_recovery_prefix` finds them all.
pub fn mfa_recovery(user: &str, hash: &str) -> String {
    format!("{}{hash}", mfa_recovery_prefix(user))
}

pub fn mfa_recovery_prefix(user: &str) -> String {
    format!("oauth:mfa_recovery:{}:", user.to_ascii_lowercase())
}

/// A TOTP lockout of a user or an address (`kind` is `user` or `ip`).
pub fn mfa_lock(kind: &str, who: &str) -> String {
    format!("oauth:mfa_lock:{kind}:{}", who.to_ascii_lowercase())
}

/// The wrong-code counter of a user or an address.
pub fn mfa_fail(kind: &str, who: &str) -> String {
    format!("oauth:mfa_fail:{kind}:{}", who.to_ascii_lowercase())
}

/// A TOTP time step `user` has used (a code works once); `mfa_used_prefix` finds them all.
pub fn mfa_used(user: &str, step: i64) -> String {
    format!("{}{step}", mfa_used_prefix(user))
}

pub fn mfa_used_prefix(user: &str) -> String {
    format!("oauth:mfa_used:{}:", user.to_ascii_lowercase())
}

/// Tombstone of a revoked access token, kept while the token would have lived: a restore
/// never writes it back.
pub fn token_revoked(jti: &str) -> String {
    format!("{TOKEN_REVOKED_PREFIX}{jti}")
}

/// How long a token's tombstone lives when its record (and so its expiry) is already gone.
pub const TOKEN_TOMBSTONE_FALLBACK_SECS: u64 = 30 * 86_400;

/// Tombstone of a revoked refresh family: a late rotation in that family must fail.
pub fn family_revoked(id: &str) -> String {
    format!("{FAMILY_REVOKED_PREFIX}{id}")
}

/// Sorted set of the refresh families issued to a client (score: family expiry).
pub fn client_families(client_id: &str) -> String {
    format!("{CLIENT_FAMILIES_PREFIX}{client_id}")
}

/// Sorted set of the refresh families issued to a user (score: family expiry), so revoking a
/// user reaches grants whose access tokens are long gone.
pub fn user_families(username: &str) -> String {
    format!("{USER_FAMILIES_PREFIX}{}", username.to_ascii_lowercase())
}

/// Sorted set of the users (lower-case) who consented to a client (score: consent expiry).
pub fn client_consents(client_id: &str) -> String {
    format!("{CLIENT_CONSENTS_PREFIX}{client_id}")
}

/// The sealed answer to a token request, by the SHA-256 of the code or refresh token it
/// presented: a retry within the window gets the same tokens.
pub fn grant_result(credential_hash: &str) -> String {
    format!("{GRANT_RESULT_PREFIX}{credential_hash}")
}

/// The lock under which one refresh token's upstream session is refreshed at the provider
/// (one call however many times the request is sent), by the refresh token's hash.
pub fn refresh_lock(token_hash: &str) -> String {
    format!("{PREFIX}refresh_lock:{token_hash}")
}

/// The provider's answer to that call, sealed, kept until our grant is written.
pub fn upstream_answer(token_hash: &str) -> String {
    format!("{PREFIX}upstream_answer:{token_hash}")
}

/// Sorted set of the short-lived keys (codes, pending logins) written for a client (score:
/// their expiry), so deleting the client removes them without a scan.
pub fn client_pending(client_id: &str) -> String {
    format!("{CLIENT_PENDING_PREFIX}{client_id}")
}

/// Family members are `t:{jti}` (access tokens) and `r:{refresh hash}`.
pub fn family_token_member(jti: &str) -> String {
    format!("t:{jti}")
}

pub fn family_refresh_member(hash: &str) -> String {
    format!("r:{hash}")
}

/// A `private_key_jwt` client assertion seen (its `jti` is single use), by
/// SHA-256(client_id, jti), kept until the assertion expires.
pub fn assertion_jti(hash: &str) -> String {
    format!("{PREFIX}assertion_jti:{hash}")
}

/// A DPoP proof's `jti` seen at the token endpoint (RFC 9449 §11.1), by SHA-256 of the key's
/// thumbprint and the `jti`, until its `iat` leaves the window.
pub fn dpop_jti(hash: &str) -> String {
    format!("{PREFIX}dpop_jti:{hash}")
}

/// Registrations not yet used for a token (a sorted set scored by registration time), kept
/// within `UNUSED_CLIENT_BUDGET`.
pub const UNUSED_CLIENTS: &str = "oauth:unused_clients";

/// The same, of the registrations made from one client address (by a hash of it), kept within
/// `UNUSED_CLIENT_BUDGET_PER_ADDRESS`.
pub fn unused_clients_from(address_hash: &str) -> String {
    format!("{UNUSED_CLIENTS}:{address_hash}")
}

/// The audit trail: a stream of security events (DESIGN §5), trimmed by length and age as it
/// is written.
pub const AUDIT: &str = "oauth:audit";
/// Per-user and per-client index streams of the trail: the same entry ids as [`AUDIT`], each
/// with the event's type only, so a user's or a client's events are found without reading
/// everyone's.
pub const AUDIT_USER_PREFIX: &str = "oauth:audit_user:";
pub const AUDIT_CLIENT_PREFIX: &str = "oauth:audit_client:";

/// A bucket's stream of the trail on a Redis Cluster (`oauth:audit:{7f12}`): the trail there
/// is one stream per bucket, each written by the steps of its slot.
pub fn audit_bucket(bucket: crate::slots::Bucket) -> String {
    format!("{AUDIT}:{{{}}}", bucket.tag())
}

pub fn audit_user(login: &str) -> String {
    format!("{AUDIT_USER_PREFIX}{}", login.to_ascii_lowercase())
}

pub fn audit_client(client_id: &str) -> String {
    format!("{AUDIT_CLIENT_PREFIX}{client_id}")
}

/// verify's usage counts of one UTC hour (`YYYYMMDDHH`): a hash from (user, client, method,
/// tool, outcome, reason) to calls, kept as long as the audit trail.
pub const USAGE_PREFIX: &str = "oauth:usage:";

pub fn usage(hour: &str) -> String {
    format!("{USAGE_PREFIX}{hour}")
}

/// Whether `key` belongs to the audit trail or the usage counts: they are not backed up (the
/// trail is exported with `mcp-gateway audit --json`) and never restored.
pub fn is_trail(key: &str) -> bool {
    key.starts_with(AUDIT) || key.starts_with(USAGE_PREFIX)
}
