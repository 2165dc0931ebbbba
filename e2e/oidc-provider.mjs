#!/usr/bin/env node
// A real OpenID Connect provider for the end-to-end tests, built on the certified `oidc-provider`
// package (panva, v9). Plain http, loopback only; in-memory state (lost on exit). Prints
// `listening PORT` on stdout once it answers requests (warnings, e.g. "Unsupported runtime" on
// Node 20, go to stderr).
//
// Issuer: http://127.0.0.1:PORT + OIDC_ISSUER_PATH (default empty). With a path such as
// `/11111111-2222-3333-4444-555555555555/v2.0` (Entra's v2 issuer shape) every OIDC endpoint lives
// under it; the discovery document's `issuer` is exactly that string.
//
//   GET  {issuer}/.well-known/openid-configuration   discovery (endpoint URLs below come from it)
//   GET  {issuer}/jwks                   signing keys (RS256, or ES256 with OIDC_ID_TOKEN_ALG=ES256)
//   GET  {issuer}/auth                   authorization endpoint: response_type=code only; PKCE
//                                        (S256) is REQUIRED for every client; `nonce`, `state` are
//                                        passed through; the answer to the client carries
//                                        code, state and iss (RFC 9207)
//   GET  {issuer}/interaction/UID        no HTML: logs in the current test user (see /_test/login),
//                                        grants every requested scope, 303 back to {issuer}/auth/UID,
//                                        which 303s to redirect_uri?code&state&iss. A disabled user
//                                        gets redirect_uri?error=access_denied&state&iss instead.
//   POST {issuer}/token                  authorization_code and refresh_token grants, form-encoded
//   GET  {issuer}/me                     userinfo, `Authorization: Bearer <access token>` (opaque)
//   POST {issuer}/token/revocation, {issuer}/token/introspection   (client-authenticated)
//   GET  {issuer}/session/end            RP-initiated logout (oidc-provider's own HTML pages)
//   POST {issuer}/request                PAR (oidc-provider default)
//
// Client authentication at the token, revocation and introspection endpoints is exactly what the
// client is registered with (token_endpoint_auth_method), nothing else is accepted:
//   client_secret_basic  `Authorization: Basic base64(urlencode(id):urlencode(secret))`, no
//                        client_secret in the body (both at once = invalid_request)
//   client_secret_post   client_id and client_secret as form fields, no Authorization header
//                        (oidc-provider itself takes either of these two for a client registered
//                        with one of them; this wrapper answers 401 invalid_client for the other
//                        one unless OIDC_LENIENT_CLIENT_AUTH=1, which behaves like Entra/Google)
//   private_key_jwt      client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//                        and client_assertion = a JWT signed with a key of the client's `jwks`
//                        (RS256/PS256/ES256/EdDSA) with iss = sub = client_id, aud = the issuer
//                        or the token endpoint URL, exp, and a jti never used before
//
// Scopes: openid, email (email, email_verified), profile (name, preferred_username, …),
// groups (groups), offline_access (a refresh token; consent is auto-granted, so no
// prompt=consent needed). Claims go into the id_token as well as userinfo. Any other key of a user
// object (hd, tid, oid, …) is released with `openid` alone, as is — that is how tests reproduce
// Google's `hd`, Entra's `tid`/`oid`. Refresh tokens are not rotated (unless
// OIDC_ROTATE_REFRESH_TOKENS=1) and a refresh answers a new id_token with the user's current
// claims; for a disabled user it answers 400 invalid_grant (userinfo: 401 invalid_token).
//
// Quirks worth knowing (oidc-provider's, or this wrapper's):
//   - oidc-provider drops offline_access from every authorization request whose `prompt` lacks
//     `consent` (absent prompt included; issueRefreshToken alone cannot fix that), so this
//     wrapper appends `consent` to the prompt of GET {issuer}/auth requests asking offline_access
//     (never to prompt=none; a POSTed authorization request is not rewritten). That consent is
//     auto-granted, so the only visible effect is one more interaction (three 303 hops) even with
//     an SSO session. The rewrite is noted in the request log (`rewritten`; `prompt` there is the
//     client's original value).
//   - prompt values: none, login, consent, select_account (all auto-completed).
//   - an SSO session (cookie `_session`) of a user other than the current test user, or of a
//     disabled user, is ignored on {issuer}/auth… requests (the cookie is not passed on), so the
//     next login is the current test user and oidc-provider's account-switch logout form (HTML)
//     never appears.
//   - cookies are signed (a `.sig` cookie next to each), HttpOnly, SameSite=Lax, never Secure
//     (plain http), paths /, {issuer}/interaction/UID, {issuer}/auth/UID.
//   - unknown scopes are ignored; `resource` (RFC 8707) is ignored (resource indicators off);
//     the access token is opaque and only good for userinfo.
//
// Test controls (not OIDC; outside the issuer path; ?user= takes a sub, preferred_username or
// email; answers JSON; not logged):
//   POST /_test/login?user=bob           the following interactions log in bob (sticky)
//   POST /_test/disable?user=alice       refresh_token grants for alice answer invalid_grant, her
//                                        logins end with error=access_denied at the client
//   POST /_test/enable?user=alice
//   POST /_test/user?user=alice          JSON body merged into the user's claims (null deletes a
//                                        claim; an unknown user is created with sub = ?user)
//   POST /_test/rotate-keys              a new signing key (new kid) signs from now on; the old
//                                        ones stay in the JWKS … (answers {kid, kids})
//   POST /_test/drop-old-keys            … until this (only the newest key is kept)
//   POST /_test/client                   JSON body: client metadata, added or replacing the client
//                                        with that client_id (e.g. once the gateway's port is known)
//   GET  /_test/requests                 JSON log of the OIDC requests: {method, path, route,
//                                        status, content_type, authorization ("Basic"|"Bearer"|
//                                        …|null), client_auth (inferred method), client_id,
//                                        form_keys, grant_type, client_assertion_type,
//                                        client_assertion {header, claims}, scope, prompt,
//                                        code_challenge_method, response_keys, error}
//   DELETE /_test/requests               clears that log
//   GET  /_test/state                    users, disabled users, current login user, kids, clients
//   GET  /_test/health                   {"ok":true}
//
// Environment:
//   OIDC_PORT or argv[2]      port (0 = any; the real one is printed as `listening PORT`)
//   OIDC_ISSUER_PATH          path appended to http://127.0.0.1:PORT (default empty)
//   OIDC_CLIENTS              JSON array of oidc-provider client metadata (client_id,
//                             client_secret, redirect_uris, token_endpoint_auth_method,
//                             grant_types, jwks, …); defaults: grant_types authorization_code +
//                             refresh_token, response_types code, client_secret_basic
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS (comma list)
//                             the single default client when OIDC_CLIENTS is unset
//                             (gateway / gateway-secret / http://127.0.0.1/callback)
//   OIDC_USERS                JSON array of {sub, preferred_username, name, email, email_verified,
//                             groups, …extra claims}; default alice, bob, mallory (unverified
//                             e-mail), carol@other.org
//   OIDC_LOGIN_USER           who logs in until /_test/login says otherwise (default: first user)
//   OIDC_ACCESS_TOKEN_TTL     seconds, access token and id_token lifetime (default 3600)
//   OIDC_REFRESH_TOKEN_TTL    seconds (default 14 days)
//   OIDC_ROTATE_REFRESH_TOKENS=1   every refresh answers a new refresh token (old one is consumed)
//   OIDC_ALWAYS_ISSUE_REFRESH_TOKEN=1   refresh tokens without offline_access too (Keycloak-like)
//   OIDC_ALWAYS_CLAIMS        comma list of claims released with `openid` regardless of scope
//                             (e.g. `groups,email` for an Entra-like provider)
//   OIDC_LENIENT_CLIENT_AUTH=1  accept client_secret_basic and client_secret_post alike
//   OIDC_ID_TOKEN_ALG         RS256 (default) or ES256

import http from "node:http";
import crypto from "node:crypto";
import { readBody as readBodyUpTo } from "./lib/http.mjs";
import Provider, { errors, interactionPolicy } from "oidc-provider";

const env = process.env;
const port = Number(process.argv[2] ?? env.OIDC_PORT ?? 0);
const issuerPath = (env.OIDC_ISSUER_PATH || "").replace(/\/+$/, "");
if (issuerPath && !issuerPath.startsWith("/")) {
  console.error("OIDC_ISSUER_PATH must start with /");
  process.exit(2);
}
const ttl = positive("OIDC_ACCESS_TOKEN_TTL", 3600);
const refreshTtl = positive("OIDC_REFRESH_TOKEN_TTL", 14 * 24 * 3600);
const alg = (env.OIDC_ID_TOKEN_ALG || "RS256").toUpperCase();
if (alg !== "RS256" && alg !== "ES256") {
  console.error("OIDC_ID_TOKEN_ALG must be RS256 or ES256");
  process.exit(2);
}
const rotateRefreshTokens = /^(1|true|yes)$/i.test(env.OIDC_ROTATE_REFRESH_TOKENS || "");
const alwaysRefresh = /^(1|true|yes)$/i.test(env.OIDC_ALWAYS_ISSUE_REFRESH_TOKEN || "");
const lenientClientAuth = /^(1|true|yes)$/i.test(env.OIDC_LENIENT_CLIENT_AUTH || "");
const alwaysClaims = (env.OIDC_ALWAYS_CLAIMS || "").split(",").map((s) => s.trim()).filter(Boolean);

function positive(name, dflt) {
  if (!env[name]) return dflt;
  const n = Number(env[name]);
  if (!Number.isSafeInteger(n) || n <= 0) {
    console.error(`${name} must be a positive integer (seconds)`);
    process.exit(2);
  }
  return n;
}

function json(name, dflt) {
  if (!env[name]) return dflt;
  try {
    return JSON.parse(env[name]);
  } catch (e) {
    console.error(`${name} is not valid JSON: ${e.message}`);
    process.exit(2);
  }
}

// ---- users -------------------------------------------------------------------------------------

const DEFAULT_USERS = [
  { sub: "alice", preferred_username: "alice", name: "Alice Example", email: "alice@example.com", email_verified: true, groups: ["mcp-users", "eng"] },
  { sub: "bob", preferred_username: "bob", name: "Bob Example", email: "bob@example.com", email_verified: true, groups: ["sales"] },
  { sub: "mallory", preferred_username: "mallory", name: "Mallory Example", email: "mallory@example.com", email_verified: false, groups: ["mcp-users"] },
  { sub: "carol", preferred_username: "carol", name: "Carol Other", email: "carol@other.org", email_verified: true, groups: ["mcp-users"] },
];

const users = new Map(); // sub -> claims (sub included)
for (const u of json("OIDC_USERS", DEFAULT_USERS)) {
  const sub = String(u.sub ?? u.preferred_username ?? u.email ?? "");
  if (!sub) {
    console.error("OIDC_USERS: every user needs a sub (or preferred_username / email)");
    process.exit(2);
  }
  users.set(sub, { ...structuredClone(u), sub });
}
const disabled = new Set();

function findUser(q) {
  if (!q) return undefined;
  if (users.has(q)) return users.get(q);
  const lq = q.toLowerCase();
  for (const u of users.values()) {
    if (String(u.preferred_username ?? "").toLowerCase() === lq || String(u.email ?? "").toLowerCase() === lq) return u;
  }
  return undefined;
}

let loginSub = (findUser(env.OIDC_LOGIN_USER) ?? users.values().next().value)?.sub;
if (!loginSub) {
  console.error("no users");
  process.exit(2);
}

const EMAIL_CLAIMS = ["email", "email_verified"];
const PROFILE_CLAIMS = ["name", "family_name", "given_name", "middle_name", "nickname", "preferred_username", "profile", "picture", "website", "gender", "birthdate", "zoneinfo", "locale", "updated_at"];
const SCOPED = new Set(["sub", ...EMAIL_CLAIMS, ...PROFILE_CLAIMS, "groups"]);
const RESERVED = new Set(["iss", "aud", "exp", "iat", "nbf", "jti", "nonce", "azp", "at_hash", "c_hash", "s_hash", "sid", "auth_time", "acr", "amr"]);

/** Claim names that are released with `openid` alone: every non-standard user key, plus OIDC_ALWAYS_CLAIMS. */
function openidClaims() {
  const names = new Set(alwaysClaims);
  for (const u of users.values()) for (const k of Object.keys(u)) if (!SCOPED.has(k) && !RESERVED.has(k)) names.add(k);
  return [...names].sort();
}

async function findAccount(_ctx, sub) {
  const user = users.get(sub);
  if (!user || disabled.has(sub)) return undefined; // refresh → invalid_grant, userinfo → invalid_token
  return {
    accountId: sub,
    async claims() {
      return structuredClone(users.get(sub) ?? { sub });
    },
  };
}

// ---- storage: one in-memory store shared by every Provider instance we build ---------------------

const store = new Map(); // key -> { value, expiresAt (ms, 0 = never) }
const grantMembers = new Map(); // grantId -> Set of keys
const GRANTABLE = new Set(["AccessToken", "AuthorizationCode", "RefreshToken", "DeviceCode", "BackchannelAuthenticationRequest"]);

function sget(key) {
  const e = store.get(key);
  if (!e) return undefined;
  if (e.expiresAt && e.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return e.value;
}
function sset(key, value, expiresIn) {
  store.set(key, { value, expiresAt: typeof expiresIn === "number" ? Date.now() + expiresIn * 1000 : 0 });
}
setInterval(() => {
  const now = Date.now();
  for (const [k, e] of store) if (e.expiresAt && e.expiresAt <= now) store.delete(k);
}, 60_000).unref();

class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }
  key(id) {
    return `${this.model}:${id}`;
  }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    sset(key, payload, expiresIn);
    if (this.model === "Session" && payload.uid) sset(`sessionUid:${payload.uid}`, id, expiresIn);
    if (payload.userCode) sset(`userCode:${payload.userCode}`, id, expiresIn);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const set = grantMembers.get(payload.grantId) ?? new Set();
      set.add(key);
      grantMembers.set(payload.grantId, set);
    }
  }
  async find(id) {
    return sget(this.key(id));
  }
  async findByUid(uid) {
    const id = sget(`sessionUid:${uid}`);
    return id ? this.find(id) : undefined;
  }
  async findByUserCode(userCode) {
    const id = sget(`userCode:${userCode}`);
    return id ? this.find(id) : undefined;
  }
  async consume(id) {
    const p = sget(this.key(id));
    if (p) p.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    store.delete(this.key(id));
  }
  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// ---- keys --------------------------------------------------------------------------------------

let keySeq = 0;
function newSigningKey() {
  const { privateKey } =
    alg === "ES256" ? crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }) : crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = privateKey.export({ format: "jwk" });
  return { ...jwk, kid: `k${++keySeq}-${crypto.randomBytes(4).toString("hex")}`, alg, use: "sig" };
}
let keys = [newSigningKey()]; // keys[0] signs (oidc-provider picks the first matching key)
const cookieKeys = [crypto.randomBytes(32).toString("base64url")];

// ---- clients -----------------------------------------------------------------------------------

let clients = json("OIDC_CLIENTS", null) ?? [
  {
    client_id: env.OIDC_CLIENT_ID || "gateway",
    client_secret: env.OIDC_CLIENT_SECRET || "gateway-secret",
    token_endpoint_auth_method: "client_secret_basic",
    redirect_uris: (env.OIDC_REDIRECT_URIS || "http://127.0.0.1/callback").split(",").map((s) => s.trim()).filter(Boolean),
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
  },
];
if (!Array.isArray(clients)) {
  console.error("OIDC_CLIENTS must be a JSON array");
  process.exit(2);
}

// ---- the provider (rebuilt when keys, clients or claim names change; state lives in `store`) -----

let issuer;
let provider;
let handler;
let builtClaims = "";

function build() {
  const extra = openidClaims();
  const { Prompt, base } = interactionPolicy;
  const policy = base();
  policy.add(new Prompt({ name: "select_account", requestable: true }), 0);

  const p = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients: structuredClone(clients),
    clientDefaults: {
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      id_token_signed_response_alg: alg,
      token_endpoint_auth_method: "client_secret_basic",
    },
    jwks: { keys: structuredClone(keys) },
    cookies: {
      keys: cookieKeys,
      long: { httpOnly: true, sameSite: "lax", signed: true },
      short: { httpOnly: true, sameSite: "lax", signed: true },
    },
    claims: {
      openid: ["sub", ...extra],
      email: EMAIL_CLAIMS,
      profile: PROFILE_CLAIMS,
      groups: ["groups"],
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
    },
    scopes: ["openid", "email", "profile", "groups", "offline_access"],
    conformIdTokenClaims: false, // scope claims go into the id_token, not only userinfo
    responseTypes: ["code"],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    ttl: {
      AccessToken: ttl,
      IdToken: ttl,
      RefreshToken: refreshTtl,
      AuthorizationCode: 600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    interactions: {
      policy,
      url: (_ctx, interaction) => `${issuer}/interaction/${interaction.uid}`,
    },
    findAccount,
    // Consent is implied: the grant always covers every scope/claim requested (offline_access too).
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (grant && (grant.accountId !== oidc.session.accountId || grant.clientId !== oidc.client.clientId)) grant = undefined;
      grant ??= new oidc.provider.Grant({ accountId: oidc.session.accountId, clientId: oidc.client.clientId });
      if (oidc.params.scope) grant.addOIDCScope(String(oidc.params.scope));
      const claims = [...oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    async issueRefreshToken(_ctx, client, code) {
      if (!client.grantTypeAllowed("refresh_token")) return false;
      return code.scopes.has("offline_access") || (alwaysRefresh && client.clientAuthMethod !== "none");
    },
    rotateRefreshToken: () => rotateRefreshTokens,
    expiresWithSession: async () => false, // tokens outlive the browser session, as at real IdPs
    async renderError(ctx, out) {
      ctx.type = "json";
      ctx.body = out;
    },
  });
  // oidc-provider accepts client_secret_basic and client_secret_post interchangeably for a client
  // registered with either; be strict unless OIDC_LENIENT_CLIENT_AUTH (compareClientSecret is only
  // called for those two methods, inside the request's AsyncLocalStorage context).
  const compare = p.Client.prototype.compareClientSecret;
  p.Client.prototype.compareClientSecret = function strictCompare(actual) {
    const method = this.clientAuthMethod;
    if (!lenientClientAuth && (method === "client_secret_basic" || method === "client_secret_post")) {
      const viaBasic = /^basic\s/i.test(Provider.ctx?.headers?.authorization ?? "");
      const used = viaBasic ? "client_secret_basic" : "client_secret_post";
      if (used !== method) {
        const e = new errors.InvalidClientAuth(`${used} used, ${method} registered`);
        e.error_description = `client ${this.clientId} is registered with token_endpoint_auth_method ${method} but authenticated with ${used}`;
        throw e;
      }
    }
    return compare.call(this, actual);
  };
  // Post-middleware: fill the request log with what oidc-provider parsed.
  p.use(async (ctx, next) => {
    try {
      await next();
    } finally {
      const entry = ctx.req[LOG];
      if (entry) annotate(entry, ctx);
    }
  });
  p.on("server_error", (_ctx, err) => console.error("oidc-provider server_error:", err));
  provider = p;
  handler = p.callback();
  builtClaims = extra.join(",");
}

function rebuildIfClaimsChanged() {
  if (openidClaims().join(",") !== builtClaims) build();
}

// ---- request log -------------------------------------------------------------------------------

const LOG = Symbol("log");
const requests = [];
const ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

function b64json(s) {
  try {
    return JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
}

function logEntry(req, url) {
  const auth = req.headers.authorization;
  const entry = {
    time: new Date().toISOString(),
    method: req.method,
    path: url.pathname,
    route: null,
    status: null,
    content_type: req.headers["content-type"] ?? null,
    authorization: auth ? auth.split(" ")[0] : null,
    dpop: !!req.headers.dpop,
    query_keys: [...new Set(url.searchParams.keys())],
  };
  for (const k of ["scope", "prompt", "code_challenge_method", "response_type", "client_id"]) {
    if (url.searchParams.has(k)) entry[k] = url.searchParams.get(k);
  }
  if (auth && /^basic\s/i.test(auth)) {
    const raw = Buffer.from(auth.slice(6).trim(), "base64").toString("utf8");
    const i = raw.indexOf(":");
    if (i >= 0) {
      try {
        entry.client_id = decodeURIComponent(raw.slice(0, i).replace(/\+/g, "%20"));
      } catch {
        entry.client_id = raw.slice(0, i);
      }
    }
  }
  requests.push(entry);
  if (requests.length > 2000) requests.shift();
  return entry;
}

function annotate(entry, ctx) {
  entry.route = ctx.oidc?.route ?? null;
  const body = ctx.oidc?.body;
  if (body && typeof body === "object" && Object.keys(body).length) {
    entry.form_keys = Object.keys(body);
    if (body.grant_type !== undefined) entry.grant_type = body.grant_type;
    if (body.client_assertion_type !== undefined) entry.client_assertion_type = body.client_assertion_type;
    if (body.client_id !== undefined && entry.client_id === undefined) entry.client_id = body.client_id;
    if (body.scope !== undefined && entry.scope === undefined) entry.scope = body.scope;
    if (typeof body.client_assertion === "string") {
      const [h, c] = body.client_assertion.split(".");
      const header = b64json(h);
      const claims = b64json(c);
      entry.client_assertion = {
        header: header && { alg: header.alg, kid: header.kid, typ: header.typ },
        claims: claims && { iss: claims.iss, sub: claims.sub, aud: claims.aud, exp: claims.exp, jti: claims.jti },
      };
    }
  }
  if (entry.authorization && /^basic$/i.test(entry.authorization)) entry.client_auth = "client_secret_basic";
  else if (body?.client_secret !== undefined) entry.client_auth = "client_secret_post";
  else if (body?.client_assertion !== undefined) entry.client_auth = body.client_assertion_type === ASSERTION_TYPE ? "jwt (private_key_jwt or client_secret_jwt)" : "client_assertion with a wrong type";
  else if (body && (entry.route === "token" || entry.route === "revocation" || entry.route === "introspection")) entry.client_auth = "none";
  if (ctx.body && typeof ctx.body === "object" && !Buffer.isBuffer(ctx.body) && typeof ctx.body.pipe !== "function") {
    if (entry.route === "token" || entry.route === "userinfo" || entry.route === "introspection") entry.response_keys = Object.keys(ctx.body);
    if (ctx.body.error) {
      entry.error = ctx.body.error;
      if (ctx.body.error_description) entry.error_description = ctx.body.error_description;
    }
  }
}

// ---- http plumbing -----------------------------------------------------------------------------

function send(res, status, body) {
  const text = JSON.stringify(body, null, 1);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), "Cache-Control": "no-store" });
  res.end(text);
}

const readBody = (req) => readBodyUpTo(req, 256 * 1024);

/** The Cookie header without oidc-provider's session cookie when that session belongs to someone
 * other than the current test user or to a disabled user (see "Quirks" above). */
function dropForeignSession(req) {
  const header = req.headers.cookie;
  if (!header) return;
  const parts = header.split(/;\s*/);
  const sid = parts.find((p) => p.startsWith("_session="))?.slice("_session=".length);
  if (!sid) return;
  const accountId = sget(`Session:${sid}`)?.accountId;
  if (!accountId || (accountId === loginSub && !disabled.has(accountId) && users.has(accountId))) return;
  req.headers.cookie = parts.filter((p) => !p.startsWith("_session=") && !p.startsWith("_session.sig=")).join("; ");
}

/** oidc-provider keeps offline_access only when `prompt` contains `consent` (it drops it otherwise,
 * whatever issueRefreshToken says), so `consent` is added to the prompt of such requests; the
 * consent interaction that follows is auto-completed like every other. */
function keepOfflineAccess(req, url, entry) {
  const scope = url.searchParams.get("scope");
  if (!scope || !scope.split(" ").includes("offline_access")) return;
  const prompt = url.searchParams.get("prompt");
  const prompts = (prompt ?? "").split(" ").filter(Boolean);
  if (prompts.includes("consent") || prompts.includes("none")) return;
  url.searchParams.set("prompt", [...prompts, "consent"].join(" "));
  entry.rewritten = `prompt=${prompt ?? "(absent)"} → prompt=${url.searchParams.get("prompt")} (keeps offline_access)`;
  return url.pathname + url.search;
}

async function interaction(req, res) {
  const p = provider;
  let details;
  try {
    details = await p.interactionDetails(req, res);
  } catch (e) {
    return send(res, 400, { error: "invalid_request", error_description: `interaction: ${e.message}` });
  }
  const { prompt, params, session } = details;
  const user = users.get(loginSub);
  const accountId = prompt.name === "login" || prompt.name === "select_account" || !session?.accountId ? loginSub : session.accountId;
  if (!user || disabled.has(accountId) || !users.has(accountId)) {
    return p.interactionFinished(req, res, { error: "access_denied", error_description: `user ${accountId} is disabled` }, { mergeWithLastSubmission: false });
  }
  const result = {};
  if (accountId !== session?.accountId || prompt.name === "login" || prompt.name === "select_account") {
    result.login = { accountId, amr: ["pwd"], remember: true };
  }
  if (prompt.name === "select_account") result.select_account = {};
  let grant = details.grantId ? await p.Grant.find(details.grantId) : undefined;
  if (grant && grant.accountId !== accountId) grant = undefined;
  grant ??= new p.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(String(params.scope));
  result.consent = { grantId: await grant.save() };
  return p.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function testControl(req, res, url, path) {
  const q = url.searchParams.get("user");
  const needUser = () => {
    const u = findUser(q);
    if (!u) send(res, 404, { error: `unknown user ${q}`, users: [...users.keys()] });
    return u;
  };
  const state = () => ({
    issuer,
    login: loginSub,
    disabled: [...disabled],
    users: [...users.values()],
    kids: keys.map((k) => k.kid),
    clients: clients.map((c) => ({ client_id: c.client_id, token_endpoint_auth_method: c.token_endpoint_auth_method ?? "client_secret_basic", redirect_uris: c.redirect_uris })),
  });
  const m = req.method;
  if (path === "/_test/health") return send(res, 200, { ok: true });
  if (path === "/_test/state" && m === "GET") return send(res, 200, state());
  if (path === "/_test/requests" && m === "GET") return send(res, 200, requests);
  if (path === "/_test/requests" && m === "DELETE") {
    requests.length = 0;
    return send(res, 200, { ok: true });
  }
  if (m !== "POST") return send(res, 405, { error: "method not allowed" });
  switch (path) {
    case "/_test/login": {
      const u = needUser();
      if (!u) return;
      loginSub = u.sub;
      return send(res, 200, { login: loginSub, disabled: disabled.has(loginSub) });
    }
    case "/_test/disable":
    case "/_test/enable": {
      const u = needUser();
      if (!u) return;
      if (path === "/_test/disable") disabled.add(u.sub);
      else disabled.delete(u.sub);
      return send(res, 200, { user: u.sub, disabled: disabled.has(u.sub) });
    }
    case "/_test/user": {
      if (!q) return send(res, 400, { error: "?user= missing" });
      let patch;
      try {
        patch = JSON.parse((await readBody(req)) || "{}");
      } catch (e) {
        return send(res, 400, { error: `body is not JSON: ${e.message}` });
      }
      if (!patch || typeof patch !== "object" || Array.isArray(patch)) return send(res, 400, { error: "body must be a JSON object" });
      const u = findUser(q) ?? { sub: q };
      for (const [k, v] of Object.entries(patch)) {
        if (k === "sub") continue;
        if (v === null) delete u[k];
        else u[k] = v;
      }
      users.set(u.sub, u);
      rebuildIfClaimsChanged();
      return send(res, 200, u);
    }
    case "/_test/rotate-keys": {
      const k = newSigningKey();
      keys = [k, ...keys];
      build();
      return send(res, 200, { kid: k.kid, kids: keys.map((x) => x.kid) });
    }
    case "/_test/drop-old-keys": {
      keys = keys.slice(0, 1);
      build();
      return send(res, 200, { kid: keys[0].kid, kids: keys.map((x) => x.kid) });
    }
    case "/_test/client": {
      let meta;
      try {
        meta = JSON.parse(await readBody(req));
      } catch (e) {
        return send(res, 400, { error: `body is not JSON: ${e.message}` });
      }
      if (!meta?.client_id) return send(res, 400, { error: "client_id missing" });
      const before = clients;
      clients = [...clients.filter((c) => c.client_id !== meta.client_id), meta];
      try {
        build();
        // Client metadata is validated lazily; look it up now to report errors to the test.
        const c = await provider.Client.find(meta.client_id);
        if (!c) throw new Error("client not found after registration");
      } catch (e) {
        clients = before;
        build();
        return send(res, 400, { error: `invalid client metadata: ${e.message}` });
      }
      return send(res, 200, state().clients);
    }
  }
  return send(res, 404, { error: `unknown test control ${path}` });
}

async function handle(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  const path = url.pathname;
  if (path.startsWith("/_test/")) return testControl(req, res, url, path);

  const entry = logEntry(req, url);
  req[LOG] = entry;
  res.on("finish", () => {
    entry.status = res.statusCode;
    const loc = res.getHeader("location");
    if (loc) entry.location = String(loc).replace(/([?&](?:code|state|code_challenge)=)[^&]{9,}/g, "$1…");
  });

  const inIssuer = !issuerPath || path === issuerPath || path.startsWith(`${issuerPath}/`);
  if (!inIssuer) return send(res, 404, { error: "not_found", error_description: `outside the issuer path ${issuerPath}` });
  const sub = path.slice(issuerPath.length) || "/";

  if (/^\/interaction\/[^/]+$/.test(sub) && req.method === "GET") {
    entry.route = "interaction";
    return interaction(req, res);
  }

  let rawUrl = req.url;
  if (sub === "/auth" || sub.startsWith("/auth/")) {
    dropForeignSession(req);
    if (sub === "/auth" && req.method === "GET") rawUrl = keepOfflineAccess(req, url, entry) ?? rawUrl;
  }
  // Mount under the issuer path the way Express does: oidc-provider derives its mount path from
  // req.originalUrl minus req.url.
  req.originalUrl = rawUrl;
  const rest = rawUrl.slice(issuerPath.length);
  req.url = rest.startsWith("/") ? rest : `/${rest}`;
  return handler(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error(e);
    if (!res.headersSent) send(res, 500, { error: "server_error", error_description: String(e?.message || e) });
    else res.destroy();
  });
});
server.listen(port, "127.0.0.1", () => {
  const { port: actual } = server.address();
  issuer = `http://127.0.0.1:${actual}${issuerPath}`;
  try {
    build();
  } catch (e) {
    console.error(`cannot configure the provider: ${e.message}`);
    process.exit(2);
  }
  process.stdout.write(`listening ${actual}\n`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));
