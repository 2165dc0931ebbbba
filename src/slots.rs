//! Redis Cluster's slots, and the buckets the store spreads its keys over there (issue #30;
//! docs/redis.md "Redis Cluster" is the layout's contract).
//!
//! A cluster places a key by the CRC16 of its hash tag (the text between the first `{` and the
//! next `}`, when not empty; else the whole key) modulo 16,384 slots. Keys that must change
//! together in one script share a tag. The store does not make tags of user-controlled text
//! (a login, a client id): it hashes the user or client to one of [`BUCKETS`] buckets, and each
//! bucket has a tag whose slot lies in the bucket's own 1/256 of the slot space. An even
//! assignment of slots to primaries (what `redis-cli --cluster create` makes) then gives each
//! primary an even share of buckets, and so of users and clients.
//!
//! Opaque values the store must find again from the value alone (a token's `jti`, a refresh
//! token, a code, a login's `state`) carry their bucket as a prefix: [`Bucket::mint_id`],
//! [`Bucket::embedded`].
//!
//! The tags are permanent: once keys are written under them, another tag for a bucket would
//! lose them. A test pins the whole table.

use std::sync::OnceLock;

use base64::Engine;
use sha2::{Digest, Sha256};

/// Redis Cluster's slot count.
pub const SLOTS: u16 = 16_384;
/// How many buckets users and clients are spread over.
pub const BUCKETS: usize = 256;
/// Slots in one bucket's share of the slot space.
const SLOTS_PER_BUCKET: u16 = SLOTS / BUCKETS as u16;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum Redis Cluster
/// places keys by.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    })
}

/// The slot of `key`, as Redis Cluster computes it (hash tags included).
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// One of the [`BUCKETS`] buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(u8);

impl Bucket {
    pub const fn new(index: u8) -> Self {
        Self(index)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// A user's bucket, by login (ASCII case aside, as the store keys logins).
    pub fn of_user(login: &str) -> Self {
        Self::hashed(b'u', login.to_ascii_lowercase().as_bytes())
    }

    /// A client's bucket, by client id.
    pub fn of_client(client_id: &str) -> Self {
        Self::hashed(b'c', client_id.as_bytes())
    }

    /// A client address's bucket (second-factor lockouts by network).
    pub fn of_address(address: &str) -> Self {
        Self::hashed(b'i', address.as_bytes())
    }

    /// The bucket of an id: the one it carries ([`Bucket::embedded`]), else one derived from
    /// the whole id (ids minted before buckets existed).
    pub fn of_id(id: &str) -> Self {
        Self::embedded(id).unwrap_or_else(|| Self::hashed(b'x', id.as_bytes()))
    }

    /// The first byte of SHA-1(kind, 0, bytes): SHA-1 because the store's Lua scripts must
    /// compute the same bucket (`redis.sha1hex` is the one hash Redis gives them); a bucket is a
    /// placement, not a secret, so SHA-1's weaknesses do not matter here.
    fn hashed(kind: u8, bytes: &[u8]) -> Self {
        let mut sha1 = sha1_smol::Sha1::new();
        sha1.update(&[kind, 0]);
        sha1.update(bytes);
        Self(sha1.digest().bytes()[0])
    }

    /// The Lua expression that computes [`Bucket::of_user`] etc. in a store script, for a
    /// string `text` and a one-letter `kind` (`u` user, `c` client, `i` address, `x` id).
    pub const LUA_HASHED: &'static str =
        "tonumber(string.sub(redis.sha1hex(kind .. '\\0' .. text), 1, 2), 16)";

    /// An id that carries this bucket: `bb.` (two lowercase hex digits and a dot) before
    /// `random`. base64url has no dot, so an id minted before buckets never looks like one.
    pub fn mint_id(self, random: &str) -> String {
        format!("{:02x}.{random}", self.0)
    }

    /// The bucket an id minted by [`Bucket::mint_id`] carries.
    pub fn embedded(id: &str) -> Option<Self> {
        let prefix = id.as_bytes().get(..3)?;
        if prefix[2] != b'.'
            || !prefix[..2]
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        std::str::from_utf8(&prefix[..2])
            .ok()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .map(Self)
    }

    /// The hash tag of this bucket's keys (without the braces): its slot lies in
    /// `[64 × bucket, 64 × bucket + 63]`.
    pub fn tag(self) -> &'static str {
        &tags()[self.index()]
    }

    /// The slots this bucket's tag may fall in.
    pub fn slots(self) -> std::ops::RangeInclusive<u16> {
        let first = u16::from(self.0) * SLOTS_PER_BUCKET;
        first..=first + SLOTS_PER_BUCKET - 1
    }
}

/// The SHA-256 (base64url) a secret value (a refresh token, a code) is stored under, with the
/// bucket the value carries in front (`7f.<hash>`), so its keys can be placed without the value;
/// a value minted before buckets hashes as it always did.
pub fn placed_hash(value: &str) -> String {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(value));
    match Bucket::embedded(value) {
        Some(bucket) => bucket.mint_id(&hash),
        None => hash,
    }
}

/// Each bucket's tag: the first of `bb`, `bb0`, `bb1`, … (`bb` the bucket in hex) whose slot
/// lies in the bucket's share. Computed once (about 65,000 CRC16s of 3-6 bytes).
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        (0..BUCKETS)
            .map(|b| {
                let bucket = Bucket(b as u8);
                let base = format!("{b:02x}");
                std::iter::once(base.clone())
                    .chain((0u32..).map(|n| format!("{base}{n}")))
                    .find(|tag| bucket.slots().contains(&(crc16(tag.as_bytes()) % SLOTS)))
                    .unwrap_or(base)
            })
            .collect()
    })
}

/// What a key family's tag is taken from: the part of the key after its prefix.
#[derive(Debug, Clone, Copy)]
enum TagOf {
    /// An id that carries its bucket, or gets a derived one ([`Bucket::of_id`]).
    Id,
    /// A login (`oauth:mfa_recovery:{user}:…`: up to the next `:`).
    User,
    /// A client id.
    Client,
    /// `{user}:{client}`: the client's (consents go with their client's other keys).
    Consent,
    /// `user:{login}` or `ip:{address}` (second-factor lockouts and counters).
    UserOrAddress,
    /// One tag for the whole family (the unused-client lists).
    Global,
}

/// The key families a cluster places by tag, longest prefix first where one prefix starts
/// another. Families not listed (`oauth:dpop_jti:`, `oauth:usage:`) are single keys written
/// alone: their own name places them.
const FAMILIES: &[(&str, TagOf)] = &[
    ("oauth:token_revoked:", TagOf::Id),
    ("oauth:token:", TagOf::Id),
    ("oauth:user_tokens:", TagOf::User),
    ("oauth:client_tokens:", TagOf::Client),
    ("oauth:client_families:", TagOf::Client),
    ("oauth:client_consents:", TagOf::Client),
    ("oauth:client_pending:", TagOf::Client),
    ("oauth:client:", TagOf::Client),
    ("oauth:consent:", TagOf::Consent),
    ("oauth:state:mfa:", TagOf::Id),
    ("oauth:state:", TagOf::Id),
    ("oauth:code:", TagOf::Id),
    ("oauth:refresh_lock:", TagOf::Id),
    ("oauth:refresh:", TagOf::Id),
    ("oauth:family_revoked:", TagOf::Id),
    ("oauth:family:", TagOf::Id),
    ("oauth:user_families:", TagOf::User),
    ("oauth:grant_result:", TagOf::Id),
    ("oauth:upstream_answer:", TagOf::Id),
    ("oauth:assertion_jti:", TagOf::Id),
    ("oauth:login_id:", TagOf::User),
    ("oauth:mfa_recovery:", TagOf::User),
    ("oauth:mfa_used:", TagOf::User),
    ("oauth:mfa_lock:", TagOf::UserOrAddress),
    ("oauth:mfa_fail:", TagOf::UserOrAddress),
    ("oauth:mfa:", TagOf::User),
    ("oauth:audit_user:", TagOf::User),
    ("oauth:audit_client:", TagOf::Client),
    ("oauth:unused_clients", TagOf::Global),
];

/// The one tag of the families placed together (the unused-client lists).
pub const GLOBAL_TAG: &str = "g";

/// A key's name in a cluster: its single-node name with its bucket's tag after the family
/// prefix (`oauth:token:7f.Q2…` → `oauth:token:{7f12}:7f.Q2…`), so every key of one user, one
/// client or one grant shares a slot. The tag comes before any text a user chose, so a login
/// holding `{…}` moves nothing. A name of another family is its own cluster name.
pub fn cluster_name(key: &str) -> String {
    let Some((prefix, rest, rule)) = FAMILIES
        .iter()
        .find_map(|(prefix, rule)| Some((*prefix, key.strip_prefix(prefix)?, *rule)))
    else {
        return key.to_string();
    };
    let first = |s: &str| s.split(':').next().unwrap_or_default().to_string();
    let tag = match rule {
        TagOf::Id => Bucket::of_id(rest).tag(),
        TagOf::User => Bucket::of_user(&first(rest)).tag(),
        TagOf::Client => Bucket::of_client(rest).tag(),
        TagOf::Consent => Bucket::of_client(rest.split_once(':').map_or(rest, |(_, c)| c)).tag(),
        TagOf::UserOrAddress => match rest.split_once(':') {
            Some(("user", login)) => Bucket::of_user(login).tag(),
            Some((_, address)) => Bucket::of_address(address).tag(),
            None => Bucket::of_id(rest).tag(),
        },
        TagOf::Global => GLOBAL_TAG,
    };
    match rule {
        // `oauth:unused_clients` and `oauth:unused_clients:{address}`.
        TagOf::Global => format!("{prefix}:{{{tag}}}{rest}"),
        _ => format!("{prefix}{{{tag}}}:{rest}"),
    }
}

/// A key's single-server name from its cluster name: [`cluster_name`] undone (the tag after
/// the family prefix taken out), so what operator commands read from a cluster (SCAN pages,
/// backups) is named as on one server and restores anywhere. A name without a tag is returned
/// as it is.
pub fn single_name(key: &str) -> String {
    let Some((prefix, rule)) = FAMILIES.iter().find(|(prefix, _)| key.starts_with(prefix)) else {
        return key.to_string();
    };
    let rest = &key[prefix.len()..];
    let untagged = match rule {
        // `oauth:unused_clients:{g}` and `oauth:unused_clients:{g}:{address}`.
        TagOf::Global => rest.strip_prefix(&format!(":{{{GLOBAL_TAG}}}")),
        _ => rest
            .strip_prefix('{')
            .and_then(|r| r.split_once("}:"))
            .filter(|(tag, _)| !tag.contains(['{', '}', ':']))
            .map(|(_, after)| after),
    };
    match untagged {
        Some(after) => format!("{prefix}{after}"),
        None => key.to_string(),
    }
}

/// [`cluster_name`] in Lua, for the store's scripts: defines `cluster_name(key)` (and the
/// tables it reads), made from the same family list and tags as the Rust one.
pub fn lua_cluster_name() -> String {
    // Constants only: a script's body runs on every call, and a table constructor of 256 tags
    // would be built each time; string constants cost nothing until read. Each tag is padded
    // to TAG_WIDTH characters; families are `prefix=rule;` pairs, longest prefix first.
    let tags: String = (0..BUCKETS)
        .map(|b| format!("{:<width$}", Bucket(b as u8).tag(), width = TAG_WIDTH))
        .collect();
    let families: String = FAMILIES
        .iter()
        .map(|(prefix, rule)| {
            let rule = match rule {
                TagOf::Id => "id",
                TagOf::User => "user",
                TagOf::Client => "client",
                TagOf::Consent => "consent",
                TagOf::UserOrAddress => "user_or_address",
                TagOf::Global => "global",
            };
            format!("{prefix}={rule};")
        })
        .collect();
    format!(
        r#"local BUCKET_TAGS = '{tags}'
local TAGGED_FAMILIES = '{families}'
local function bucket_tag(b)
  return string.match(string.sub(BUCKET_TAGS, {width} * b + 1, {width} * b + {width}), '^%S+')
end
local function bucket_of(kind, text)
  return {hashed}
end
local function id_bucket(id)
  if string.match(string.sub(id, 1, 3), '^[0-9a-f][0-9a-f]%.$') then
    return tonumber(string.sub(id, 1, 2), 16)
  end
  return bucket_of('x', id)
end
local function cluster_name(key)
  for prefix, rule in string.gmatch(TAGGED_FAMILIES, '([^=;]+)=([^;]+);') do
    if string.sub(key, 1, #prefix) == prefix then
      local rest = string.sub(key, #prefix + 1)
      local b
      if rule == 'global' then return prefix .. ':{{{global}}}' .. rest end
      if rule == 'id' then b = id_bucket(rest)
      elseif rule == 'user' then b = bucket_of('u', string.lower(string.match(rest, '^[^:]*')))
      elseif rule == 'client' then b = bucket_of('c', rest)
      elseif rule == 'consent' then b = bucket_of('c', string.match(rest, '^[^:]*:(.*)$') or rest)
      else
        local kind, who = string.match(rest, '^([^:]*):(.*)$')
        if kind == 'user' then b = bucket_of('u', string.lower(who))
        elseif kind then b = bucket_of('i', who)
        else b = id_bucket(rest) end
      end
      return prefix .. '{{' .. bucket_tag(b) .. '}}:' .. rest
    end
  end
  return key
end
"#,
        width = TAG_WIDTH,
        hashed = Bucket::LUA_HASHED,
        global = GLOBAL_TAG,
    )
}

/// The width each tag is padded to in the Lua table of tags (every tag is shorter).
const TAG_WIDTH: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_fits_the_lua_table() {
        for b in 0..BUCKETS {
            let tag = Bucket(b as u8).tag();
            assert!(tag.len() < TAG_WIDTH && !tag.contains(' '), "{tag}");
        }
    }

    #[test]
    fn single_names_undo_cluster_names() {
        let id = Bucket::of_user("erin").mint_id("Q2xv");
        for key in [
            format!("oauth:token:{id}"),
            format!("oauth:refresh:{id}"),
            "oauth:user_tokens:Erin".to_string(),
            "oauth:client_pending:c-1".to_string(),
            "oauth:consent:erin:c-1".to_string(),
            "oauth:mfa_fail:user:erin".to_string(),
            "oauth:mfa_fail:ip:10.0.0.1".to_string(),
            "oauth:unused_clients".to_string(),
            "oauth:unused_clients:a1b2".to_string(),
            "oauth:token:legacy-id".to_string(),
            "oauth:signing_key".to_string(),
            "oauth:dpop_jti:x".to_string(),
        ] {
            let tagged = cluster_name(&key);
            assert_eq!(single_name(&tagged), key, "{tagged}");
            // A single-server name is left as it is.
            assert_eq!(single_name(&key), key);
        }
    }

    #[test]
    fn slots_are_computed_as_redis_cluster_does() {
        // The CRC16 check value of the XMODEM variant, and slots `CLUSTER KEYSLOT` gives.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag is no tag; only the first `{…}` counts.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn every_bucket_has_a_tag_in_its_own_share_of_the_slots() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..BUCKETS {
            let bucket = Bucket(b as u8);
            let tag = bucket.tag();
            assert!(
                bucket.slots().contains(&slot(tag.as_bytes())),
                "bucket {b}: {tag}"
            );
            let key = format!("oauth:token:{{{tag}}}:{}", bucket.mint_id("x"));
            assert!(bucket.slots().contains(&slot(key.as_bytes())), "{key}");
            assert!(seen.insert(tag), "tag {tag} twice");
        }
        // Three primaries with the slot ranges `redis-cli --cluster create` gives them
        // (0-5460, 5461-10922, 10923-16383) hold a third of the buckets each, within one
        // (a bucket whose share straddles a boundary goes where its tag falls).
        let per_primary = [0..=5460u16, 5461..=10922, 10923..=16383].map(|range| {
            (0..BUCKETS)
                .filter(|&b| range.contains(&slot(Bucket(b as u8).tag().as_bytes())))
                .count()
        });
        assert_eq!(per_primary.iter().sum::<usize>(), BUCKETS);
        assert!(
            per_primary.iter().all(|n| (84..=87).contains(n)),
            "{per_primary:?}"
        );
    }

    #[test]
    fn the_tag_table_never_changes() {
        // Keys are written under these tags: another table would lose them.
        let all: String = (0..BUCKETS)
            .map(|b| Bucket(b as u8).tag())
            .collect::<Vec<_>>()
            .join(",");
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&all));
        assert_eq!(&all[..20], "00357,01372,025,0321");
        assert_eq!(digest, PINNED_TABLE_DIGEST, "{all}");
    }

    const PINNED_ALICE: usize = 26;

    /// SHA-256 (base64url) of the tags joined by commas, as first computed.
    const PINNED_TABLE_DIGEST: &str = "0OpP5Bu6Ef82_lrFfBvxKO2guVkZIuRsiH4ou3WzCPk";

    #[test]
    fn ids_carry_their_bucket_and_old_ids_get_a_stable_one() {
        let bucket = Bucket::of_user("Alice");
        assert_eq!(bucket, Bucket::of_user("alice"));
        let id = bucket.mint_id("Q2xvdWRz");
        assert_eq!(&id[2..3], ".");
        assert_eq!(Bucket::embedded(&id), Some(bucket));
        assert_eq!(Bucket::of_id(&id), bucket);
        // A base64url id (no dot) has no embedded bucket; its derived one never changes.
        let legacy = "Q2xvdWRzQXJlTm90SGFzaFRhZ3M";
        assert_eq!(Bucket::embedded(legacy), None);
        assert_eq!(Bucket::of_id(legacy), Bucket::of_id(legacy));
        for not_one in ["7F.x", "7.x", "zz.x", "", "ab"] {
            assert_eq!(Bucket::embedded(not_one), None, "{not_one}");
        }
        // Pinned: the store's Lua scripts compute the same (tests/it/cluster.rs checks them
        // against Redis itself).
        assert_eq!(Bucket::of_user("alice").index(), PINNED_ALICE);
        // A secret is stored under its hash, placed in the bucket it carries.
        assert_eq!(Bucket::embedded(&placed_hash(&id)), Some(bucket));
        assert_eq!(placed_hash(&id).len(), 3 + 43);
        assert_eq!(placed_hash(legacy).len(), 43);
        // Users, clients and addresses of the same text are unrelated buckets.
        let text = "acme";
        let kinds = [
            Bucket::of_user(text),
            Bucket::of_client(text),
            Bucket::of_address(text),
        ];
        assert!(kinds[0] != kinds[1] || kinds[1] != kinds[2]);
    }

    #[test]
    fn a_users_a_clients_and_a_grants_keys_share_their_slot() {
        let alice = Bucket::of_user("alice");
        let jti = alice.mint_id("Q2xvdWRz");
        let slot_of = |key: &str| slot(cluster_name(key).as_bytes());
        let home = slot_of(&format!("oauth:token:{jti}"));
        assert!(alice.slots().contains(&home));
        // Everything that names the user (any case) or the grant's ids lands there too.
        for key in [
            format!("oauth:token_revoked:{jti}"),
            "oauth:user_tokens:alice".to_string(),
            "oauth:user_families:alice".to_string(),
            "oauth:mfa:alice".to_string(),
            "oauth:mfa_recovery:alice:h4sh".to_string(),
            "oauth:mfa_used:alice:5123".to_string(),
            "oauth:mfa_lock:user:alice".to_string(),
            "oauth:login_id:alice".to_string(),
            "oauth:audit_user:alice".to_string(),
            format!("oauth:refresh:{}", alice.mint_id("h")),
            format!("oauth:family:{}", alice.mint_id("f")),
            format!("oauth:family_revoked:{}", alice.mint_id("f")),
            format!("oauth:code:{}", alice.mint_id("c")),
            format!("oauth:grant_result:{}", alice.mint_id("r")),
        ] {
            assert_eq!(slot_of(&key), home, "{key} -> {}", cluster_name(&key));
        }
        // A client's keys, its consents included, share the client's slot.
        let client = "c-123";
        let theirs = slot_of(&format!("oauth:client:{client}"));
        for key in [
            "oauth:client_tokens:c-123",
            "oauth:client_families:c-123",
            "oauth:client_consents:c-123",
            "oauth:client_pending:c-123",
            "oauth:consent:alice:c-123",
            "oauth:audit_client:c-123",
        ] {
            assert_eq!(slot_of(key), theirs, "{key}");
        }
        // State ids carry their bucket, MFA sessions too.
        let client_bucket = Bucket::of_client(client);
        for key in [
            format!("oauth:state:{}", client_bucket.mint_id("s")),
            format!("oauth:state:mfa:{}", client_bucket.mint_id("m")),
        ] {
            assert_eq!(slot_of(&key), theirs, "{key}");
        }
        // The unused-client lists are one slot; single keys written alone keep their names.
        assert_eq!(
            slot_of("oauth:unused_clients"),
            slot_of("oauth:unused_clients:a1b2")
        );
        assert_eq!(
            cluster_name("oauth:unused_clients"),
            "oauth:unused_clients:{g}"
        );
        for alone in ["oauth:dpop_jti:x", "oauth:usage:2026120716", "other"] {
            assert_eq!(cluster_name(alone), alone);
        }
        // A login that holds braces cannot choose the slot.
        let sly = cluster_name("oauth:user_tokens:{x}");
        assert!(sly.starts_with("oauth:user_tokens:{"), "{sly}");
        assert_eq!(slot(sly.as_bytes()), slot_of("oauth:user_families:{x}"));
        assert_ne!(slot(sly.as_bytes()), slot(b"x"));
    }
}
