//! Redis key names, in one place (DESIGN §5; the seed's `oauth:*` names are the public
//! interface that operators' scripts and backups rely on).

pub const PREFIX: &str = "oauth:";
pub const REVOCATION_CHANNEL: &str = "oauth:revocations";
pub const TOKEN_PREFIX: &str = "oauth:token:";
pub const USER_TOKENS_PREFIX: &str = "oauth:user_tokens:";
pub const CLIENT_TOKENS_PREFIX: &str = "oauth:client_tokens:";

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
    format!("oauth:state:{state}")
}

/// Codes are stored under their SHA-256, never in the clear.
pub fn code(code_hash: &str) -> String {
    format!("oauth:code:{code_hash}")
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

pub fn mfa(user: &str) -> String {
    format!("oauth:mfa:{}", user.to_ascii_lowercase())
}
