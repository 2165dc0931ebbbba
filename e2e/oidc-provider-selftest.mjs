#!/usr/bin/env node
// Self-test of e2e/oidc-provider.mjs: starts it as a child process (Entra-shaped issuer path, three
// clients: client_secret_basic, client_secret_post, private_key_jwt) and checks, with plain fetch:
//   discovery (issuer exact), the code flow with PKCE + nonce + state walked by browser-login.mjs
//   (and by a cookie-keeping loop of our own, for SSO and user switching), the id_token (signature
//   against the JWKS, iss, aud, nonce, email_verified, groups, extra claims), userinfo, the
//   request log, refresh (new id_token with current claims), PKCE enforcement, disabling a user
//   (refresh → invalid_grant, login → access_denied), key rotation (new kid in JWKS and in the
//   next id_token, drop-old-keys), then an ES256 instance without issuer path.
// Prints `ok` and exits 0; otherwise prints the failure and exits 1. No dependencies.
//
//   node e2e/oidc-provider-selftest.mjs

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { browserLogin } from "./browser-login.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const REDIRECT = "http://127.0.0.1:9/callback";
const TENANT_PATH = "/11111111-2222-3333-4444-555555555555/v2.0";
const children = [];

function assert(cond, msg, extra) {
  if (!cond) {
    const e = new Error(msg);
    e.extra = extra;
    throw e;
  }
}
const eq = (a, b, msg) => assert(JSON.stringify(a) === JSON.stringify(b), `${msg}: got ${JSON.stringify(a)}, expected ${JSON.stringify(b)}`);
const b64u = (buf) => Buffer.from(buf).toString("base64url");

async function start(env) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [path.join(here, "oidc-provider.mjs"), "0"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
    child.stderrText = stderr;
  });
  const port = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`provider did not start in 15s; stderr: ${stderr}`)), 15000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^listening (\d+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on("exit", (code) => reject(new Error(`provider exited with ${code}; stderr: ${stderr}`)));
  });
  const ms = Math.round(performance.now() - t0);
  return { port, ms, base: `http://127.0.0.1:${port}`, stderr: () => stderr };
}

async function getJson(url, init) {
  const res = await fetch(url, init);
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body, headers: res.headers };
}
const post = (url, body, headers = {}) => getJson(url, { method: "POST", body, headers });

function decodeJwt(jwt) {
  const [h, p, s] = jwt.split(".");
  return { header: JSON.parse(Buffer.from(h, "base64url")), payload: JSON.parse(Buffer.from(p, "base64url")), signingInput: `${h}.${p}`, signature: Buffer.from(s, "base64url") };
}

async function verifyJwt(jwt, jwksUri) {
  const d = decodeJwt(jwt);
  const { body: jwks } = await getJson(jwksUri);
  const jwk = jwks.keys.find((k) => k.kid === d.header.kid);
  assert(jwk, `no JWKS key with kid ${d.header.kid}`, jwks);
  const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
  const ok =
    d.header.alg === "ES256"
      ? crypto.verify("sha256", Buffer.from(d.signingInput), { key, dsaEncoding: "ieee-p1363" }, d.signature)
      : crypto.verify("sha256", Buffer.from(d.signingInput), key, d.signature);
  assert(ok, `bad ${d.header.alg} signature (kid ${d.header.kid})`);
  return d;
}

function pkce() {
  const verifier = b64u(crypto.randomBytes(32));
  return { verifier, challenge: b64u(crypto.createHash("sha256").update(verifier).digest()) };
}

function authUrl(meta, clientId, extra = {}) {
  const { verifier, challenge } = pkce();
  const state = b64u(crypto.randomBytes(12));
  const nonce = b64u(crypto.randomBytes(12));
  const u = new URL(meta.authorization_endpoint);
  const params = {
    client_id: clientId,
    response_type: "code",
    redirect_uri: REDIRECT,
    scope: "openid email profile groups offline_access",
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
    ...extra,
  };
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  return { url: u.toString(), verifier, state, nonce };
}

/** A cookie-keeping, redirect-following loop (per origin, like browser-login.mjs) that can be reused. */
class Agent {
  constructor() {
    this.jar = new Map();
    this.setCookies = [];
  }
  async go(url, stopAt = REDIRECT) {
    for (let hop = 0; hop < 12; hop++) {
      const origin = new URL(url).origin;
      const jar = this.jar.get(origin) ?? new Map();
      const headers = jar.size ? { Cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; ") } : {};
      const res = await fetch(url, { redirect: "manual", headers });
      for (const sc of res.headers.getSetCookie()) {
        this.setCookies.push(sc);
        const [pair] = sc.split(";");
        const i = pair.indexOf("=");
        const name = pair.slice(0, i).trim();
        const value = pair.slice(i + 1).trim();
        if (!value || /expires=Thu, 01 Jan 1970/i.test(sc)) jar.delete(name);
        else jar.set(name, value);
      }
      this.jar.set(origin, jar);
      const loc = res.headers.get("location");
      if (res.status >= 300 && res.status < 400 && loc) {
        const next = new URL(loc, url).toString();
        if (next.startsWith(stopAt)) return { hops: hop + 1, params: new URL(next).searchParams };
        url = next;
        continue;
      }
      throw new Error(`GET ${url} answered ${res.status}: ${(await res.text()).slice(0, 500)}`);
    }
    throw new Error("too many hops");
  }
}

async function login(meta, clientId, extra) {
  const a = authUrl(meta, clientId, extra);
  const r = await browserLogin(a.url, { redirectUri: REDIRECT, issuer: meta.issuer, strict: false });
  assert(r.code, "no code at the redirect_uri", r);
  eq(r.state, a.state, "state passed through");
  eq(r.iss, meta.issuer, "iss (RFC 9207) in the authorization response");
  return { ...a, code: r.code, steps: r.steps };
}

const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;
const FORM = { "Content-Type": "application/x-www-form-urlencoded" };

async function tokenBasic(meta, form) {
  return post(meta.token_endpoint, new URLSearchParams(form), { ...FORM, Authorization: basic("gateway", "gateway-secret") });
}

function checkIdToken(p, { meta, aud, nonce, sub, email, verified, groups }) {
  eq(p.iss, meta.issuer, "id_token iss");
  eq(p.aud, aud, "id_token aud");
  if (nonce !== undefined) eq(p.nonce, nonce, "id_token nonce");
  eq(p.sub, sub, "id_token sub");
  eq(p.email, email, "id_token email");
  eq(p.email_verified, verified, "id_token email_verified");
  eq(p.groups, groups, "id_token groups");
  assert(p.exp > p.iat, "id_token exp > iat");
}

async function main() {
  // --- a private_key_jwt client's key pair ---
  const { privateKey: clientKey, publicKey: clientPub } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const clientJwk = { ...clientPub.export({ format: "jwk" }), kid: "client-key-1", alg: "ES256", use: "sig" };
  const clients = [
    { client_id: "gateway", client_secret: "gateway-secret", token_endpoint_auth_method: "client_secret_basic", redirect_uris: [REDIRECT], grant_types: ["authorization_code", "refresh_token"] },
    { client_id: "gw-post", client_secret: "post-secret", token_endpoint_auth_method: "client_secret_post", redirect_uris: [REDIRECT], grant_types: ["authorization_code", "refresh_token"] },
    { client_id: "gw-jwt", token_endpoint_auth_method: "private_key_jwt", jwks: { keys: [clientJwk] }, redirect_uris: [REDIRECT], grant_types: ["authorization_code", "refresh_token"] },
  ];
  const users = [
    { sub: "alice", preferred_username: "alice", name: "Alice", email: "alice@example.com", email_verified: true, groups: ["mcp-users", "eng"], tid: "11111111-2222-3333-4444-555555555555", oid: "00000000-0000-0000-0000-00000000a11c" },
    { sub: "bob", preferred_username: "bob", name: "Bob", email: "bob@example.com", email_verified: true, groups: ["sales"], hd: "example.com" },
    { sub: "mallory", preferred_username: "mallory", email: "mallory@example.com", email_verified: false, groups: ["mcp-users"] },
  ];

  const op = await start({ OIDC_ISSUER_PATH: TENANT_PATH, OIDC_CLIENTS: JSON.stringify(clients), OIDC_USERS: JSON.stringify(users), OIDC_ACCESS_TOKEN_TTL: "600" });
  const issuer = `${op.base}${TENANT_PATH}`;

  // --- discovery ---
  const disc = await getJson(`${issuer}/.well-known/openid-configuration`);
  eq(disc.status, 200, "discovery status");
  const meta = disc.body;
  eq(meta.issuer, issuer, "discovery issuer");
  for (const k of ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"]) assert(meta[k]?.startsWith(`${issuer}/`), `${k} under the issuer: ${meta[k]}`);
  assert(meta.code_challenge_methods_supported?.includes("S256"), "S256 advertised");
  for (const s of ["openid", "email", "profile", "groups", "offline_access"]) assert(meta.scopes_supported.includes(s), `scope ${s} advertised`);
  eq((await getJson(`${op.base}/.well-known/openid-configuration`)).status, 404, "no discovery outside the issuer path");

  // --- code flow for alice, client_secret_basic, walked by browser-login.mjs ---
  await post(`${op.base}/_test/login?user=alice`);
  await fetch(`${op.base}/_test/requests`, { method: "DELETE" });
  const a1 = await login(meta, "gateway");
  const t1 = await tokenBasic(meta, { grant_type: "authorization_code", code: a1.code, redirect_uri: REDIRECT, code_verifier: a1.verifier });
  eq(t1.status, 200, `token status (${JSON.stringify(t1.body)})`);
  assert(t1.body.access_token && t1.body.id_token && t1.body.refresh_token, "access, id and refresh tokens", t1.body);
  eq(t1.body.token_type, "Bearer", "token_type");
  eq(t1.body.expires_in, 600, "expires_in from OIDC_ACCESS_TOKEN_TTL");
  const id1 = await verifyJwt(t1.body.id_token, meta.jwks_uri);
  eq(id1.header.alg, "RS256", "default alg");
  checkIdToken(id1.payload, { meta, aud: "gateway", nonce: a1.nonce, sub: "alice", email: "alice@example.com", verified: true, groups: ["mcp-users", "eng"] });
  eq(id1.payload.tid, users[0].tid, "extra claim tid in the id_token");
  eq(id1.payload.oid, users[0].oid, "extra claim oid in the id_token");
  eq(id1.payload.exp - id1.payload.iat, 600, "id_token lifetime");
  const firstKid = id1.header.kid;

  // Cookies over plain http: none may be Secure (fetch would drop them over http in a browser).
  const setCookies = a1.steps.flatMap((s) => s.set_cookie ?? []);
  assert(setCookies.some((c) => c.name === "_interaction") && setCookies.some((c) => c.name === "_session"), "interaction and session cookies set", setCookies);
  assert(setCookies.every((c) => !c.attributes.some((x) => /^secure$/i.test(x))), "no Secure cookie over http", setCookies);

  // userinfo with the opaque access token
  const ui = await getJson(meta.userinfo_endpoint, { headers: { Authorization: `Bearer ${t1.body.access_token}` } });
  eq(ui.status, 200, "userinfo status");
  eq([ui.body.sub, ui.body.email, ui.body.email_verified, ui.body.groups, ui.body.tid], ["alice", "alice@example.com", true, ["mcp-users", "eng"], users[0].tid], "userinfo claims");

  // the request log saw client_secret_basic
  const log1 = (await getJson(`${op.base}/_test/requests`)).body;
  const tokReq = log1.find((r) => r.route === "token");
  assert(tokReq, "token request logged", log1);
  eq([tokReq.method, tokReq.authorization, tokReq.client_auth, tokReq.client_id, tokReq.grant_type], ["POST", "Basic", "client_secret_basic", "gateway", "authorization_code"], "token request log");
  assert(!tokReq.form_keys.includes("client_secret") && tokReq.form_keys.includes("code_verifier"), "form keys", tokReq);
  assert(tokReq.response_keys.includes("refresh_token"), "log: refresh_token in the answer", tokReq);
  const authReq = log1.find((r) => r.route === "authorization");
  eq([authReq.code_challenge_method, authReq.scope], ["S256", "openid email profile groups offline_access"], "authorization request log");

  // --- refresh: new id_token with current claims ---
  await post(`${op.base}/_test/user?user=alice`, JSON.stringify({ groups: ["mcp-users", "eng", "admins"], name: "Alice Renamed" }), { "Content-Type": "application/json" });
  const r1 = await tokenBasic(meta, { grant_type: "refresh_token", refresh_token: t1.body.refresh_token });
  eq(r1.status, 200, `refresh status (${JSON.stringify(r1.body)})`);
  const rid1 = await verifyJwt(r1.body.id_token, meta.jwks_uri);
  checkIdToken(rid1.payload, { meta, aud: "gateway", sub: "alice", email: "alice@example.com", verified: true, groups: ["mcp-users", "eng", "admins"] });
  eq(rid1.payload.name, "Alice Renamed", "refreshed id_token has current name");
  const refreshToken = r1.body.refresh_token ?? t1.body.refresh_token;

  // --- PKCE is required; offline_access survives prompt=login; no offline_access → no refresh token ---
  {
    const a = authUrl(meta, "gateway", { code_challenge: undefined, code_challenge_method: undefined });
    const r = await new Agent().go(a.url);
    eq(r.params.get("error"), "invalid_request", "authorization without PKCE");
  }
  {
    const a = await login(meta, "gateway", { prompt: "login" });
    const t = await tokenBasic(meta, { grant_type: "authorization_code", code: a.code, redirect_uri: REDIRECT, code_verifier: a.verifier });
    assert(t.body.refresh_token, "refresh token with prompt=login + offline_access", t.body);
    const a2 = await login(meta, "gateway", { scope: "openid email" });
    const t2 = await tokenBasic(meta, { grant_type: "authorization_code", code: a2.code, redirect_uri: REDIRECT, code_verifier: a2.verifier });
    eq([t2.status, t2.body.refresh_token], [200, undefined], "no refresh token without offline_access");
    const p2 = decodeJwt(t2.body.id_token).payload;
    eq([p2.email, p2.groups], ["alice@example.com", undefined], "scope filtering: email yes, groups no");
    const bad = await tokenBasic(meta, { grant_type: "authorization_code", code: a2.code, redirect_uri: REDIRECT, code_verifier: a2.verifier });
    eq([bad.status, bad.body.error], [400, "invalid_grant"], "code reuse");
  }

  // --- SSO and user switching with one cookie jar: no HTML page on the way ---
  {
    const agent = new Agent();
    const a = authUrl(meta, "gateway");
    const r = await agent.go(a.url);
    assert(r.params.get("code"), "first login in a persistent jar");
    const sso = await agent.go(authUrl(meta, "gateway", { scope: "openid email" }).url);
    assert(sso.params.get("code") && sso.hops === 1, `SSO: straight back to the client (hops ${sso.hops})`);
    const sso2 = await agent.go(authUrl(meta, "gateway").url);
    assert(sso2.params.get("code") && sso2.hops === 3, `SSO with offline_access: one auto-consent (hops ${sso2.hops})`);
    await post(`${op.base}/_test/login?user=bob`);
    const b = authUrl(meta, "gateway");
    const rb = await agent.go(b.url);
    const tb = await tokenBasic(meta, { grant_type: "authorization_code", code: rb.params.get("code"), redirect_uri: REDIRECT, code_verifier: b.verifier });
    const pb = decodeJwt(tb.body.id_token).payload;
    eq([pb.sub, pb.hd, pb.groups, pb.nonce], ["bob", "example.com", ["sales"], b.nonce], "after /_test/login?user=bob the same jar logs in bob");
    await post(`${op.base}/_test/login?user=mallory`);
    const m = await login(meta, "gateway");
    const tm = await tokenBasic(meta, { grant_type: "authorization_code", code: m.code, redirect_uri: REDIRECT, code_verifier: m.verifier });
    eq(decodeJwt(tm.body.id_token).payload.email_verified, false, "mallory's email_verified");
    await post(`${op.base}/_test/login?user=alice`);
  }

  // --- client_secret_post and private_key_jwt ---
  {
    const a = await login(meta, "gw-post");
    const t = await post(meta.token_endpoint, new URLSearchParams({ grant_type: "authorization_code", code: a.code, redirect_uri: REDIRECT, code_verifier: a.verifier, client_id: "gw-post", client_secret: "post-secret" }), FORM);
    eq(t.status, 200, `client_secret_post token (${JSON.stringify(t.body)})`);
    eq(decodeJwt(t.body.id_token).payload.aud, "gw-post", "aud for gw-post");
    const wrong = await tokenBasic(meta, { grant_type: "refresh_token", refresh_token: t.body.refresh_token });
    eq([wrong.status, wrong.body.error], [400, "invalid_grant"], "another client's refresh token");
    const asBasic = await post(meta.token_endpoint, new URLSearchParams({ grant_type: "refresh_token", refresh_token: t.body.refresh_token }), { ...FORM, Authorization: basic("gw-post", "post-secret") });
    eq([asBasic.status, asBasic.body.error], [401, "invalid_client"], "client_secret_post client using Basic");
  }
  {
    const assertion = (aud) => {
      const now = Math.floor(Date.now() / 1000);
      const h = b64u(JSON.stringify({ alg: "ES256", kid: "client-key-1", typ: "JWT" }));
      const p = b64u(JSON.stringify({ iss: "gw-jwt", sub: "gw-jwt", aud, iat: now, exp: now + 60, jti: crypto.randomUUID() }));
      const sig = crypto.sign("sha256", Buffer.from(`${h}.${p}`), { key: clientKey, dsaEncoding: "ieee-p1363" });
      return `${h}.${p}.${b64u(sig)}`;
    };
    const a = await login(meta, "gw-jwt");
    const t = await post(
      meta.token_endpoint,
      new URLSearchParams({ grant_type: "authorization_code", code: a.code, redirect_uri: REDIRECT, code_verifier: a.verifier, client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", client_assertion: assertion(meta.issuer) }),
      FORM,
    );
    eq(t.status, 200, `private_key_jwt token (${JSON.stringify(t.body)})`);
    const r = await post(
      meta.token_endpoint,
      new URLSearchParams({ grant_type: "refresh_token", refresh_token: t.body.refresh_token, client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", client_assertion: assertion(meta.token_endpoint) }),
      FORM,
    );
    eq(r.status, 200, `private_key_jwt refresh with aud = token endpoint (${JSON.stringify(r.body)})`);
    const log = (await getJson(`${op.base}/_test/requests`)).body.filter((x) => x.route === "token" && x.client_assertion);
    eq(log.at(-1).client_assertion_type, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "log: client_assertion_type");
    eq([log.at(-1).authorization, log.at(-1).client_assertion.claims.aud, log.at(-1).client_assertion.header.alg], [null, meta.token_endpoint, "ES256"], "log: assertion details");
  }

  // --- disable alice: refresh → invalid_grant, login → access_denied; enable again ---
  await post(`${op.base}/_test/disable?user=alice`);
  const r2 = await tokenBasic(meta, { grant_type: "refresh_token", refresh_token: refreshToken });
  eq([r2.status, r2.body.error], [400, "invalid_grant"], "refresh for a disabled user");
  const ui2 = await getJson(meta.userinfo_endpoint, { headers: { Authorization: `Bearer ${t1.body.access_token}` } });
  eq(ui2.status, 401, "userinfo for a disabled user");
  {
    const a = authUrl(meta, "gateway");
    const r = await new Agent().go(a.url);
    eq([r.params.get("error"), r.params.get("state"), r.params.get("code")], ["access_denied", a.state, null], "login of a disabled user");
  }
  await post(`${op.base}/_test/enable?user=alice`);
  const r3 = await tokenBasic(meta, { grant_type: "refresh_token", refresh_token: refreshToken });
  eq(r3.status, 200, "refresh after enable");

  // --- key rotation ---
  const rot = (await post(`${op.base}/_test/rotate-keys`)).body;
  assert(rot.kid && rot.kid !== firstKid, "a new kid", rot);
  const jwks = (await getJson(meta.jwks_uri)).body;
  const kids = jwks.keys.map((k) => k.kid);
  assert(kids.includes(rot.kid) && kids.includes(firstKid), `both kids in JWKS: ${kids}`);
  assert(jwks.keys.every((k) => k.d === undefined && k.p === undefined), "JWKS has no private parts");
  const r4 = await tokenBasic(meta, { grant_type: "refresh_token", refresh_token: refreshToken });
  eq(r4.status, 200, "refresh after rotation (tokens survive the rebuild)");
  eq((await verifyJwt(r4.body.id_token, meta.jwks_uri)).header.kid, rot.kid, "refreshed id_token signed with the new kid");
  const a5 = await login(meta, "gateway");
  const t5 = await tokenBasic(meta, { grant_type: "authorization_code", code: a5.code, redirect_uri: REDIRECT, code_verifier: a5.verifier });
  const id5 = await verifyJwt(t5.body.id_token, meta.jwks_uri);
  eq(id5.header.kid, rot.kid, "next id_token signed with the new kid");
  eq(id5.payload.nonce, a5.nonce, "nonce after rotation");
  await post(`${op.base}/_test/drop-old-keys`);
  eq((await getJson(meta.jwks_uri)).body.keys.map((k) => k.kid), [rot.kid], "JWKS after drop-old-keys");

  // --- ES256, no issuer path, default client from OIDC_REDIRECT_URIS, default users ---
  const es = await start({ OIDC_ID_TOKEN_ALG: "ES256", OIDC_REDIRECT_URIS: `http://127.0.0.1:8/x,${REDIRECT}` });
  const esMeta = (await getJson(`${es.base}/.well-known/openid-configuration`)).body;
  eq(esMeta.issuer, es.base, "ES256 instance issuer");
  eq(esMeta.id_token_signing_alg_values_supported, ["ES256"], "ES256 advertised");
  await post(`${es.base}/_test/login?user=carol@other.org`);
  const ae = await login(esMeta, "gateway");
  const te = await tokenBasic(esMeta, { grant_type: "authorization_code", code: ae.code, redirect_uri: REDIRECT, code_verifier: ae.verifier });
  eq(te.status, 200, `ES256 token (${JSON.stringify(te.body)})`);
  const ide = await verifyJwt(te.body.id_token, esMeta.jwks_uri);
  eq(ide.header.alg, "ES256", "ES256 id_token");
  checkIdToken(ide.payload, { meta: esMeta, aud: "gateway", nonce: ae.nonce, sub: "carol", email: "carol@other.org", verified: true, groups: ["mcp-users"] });

  // --- a claim name no user had before (provider rebuilt), a client registered at runtime ---
  await post(`${es.base}/_test/user?user=carol`, JSON.stringify({ hd: "other.org", groups: ["mcp-users", "x"] }), { "Content-Type": "application/json" });
  const reg = await post(`${es.base}/_test/client`, JSON.stringify({ client_id: "late", client_secret: "late-secret", redirect_uris: [REDIRECT] }), { "Content-Type": "application/json" });
  eq(reg.status, 200, `runtime client registration (${JSON.stringify(reg.body)})`);
  const bad = await post(`${es.base}/_test/client`, JSON.stringify({ client_id: "broken", redirect_uris: "nope" }), { "Content-Type": "application/json" });
  eq(bad.status, 400, `invalid client metadata refused (${JSON.stringify(bad.body)})`);
  const al = await login(esMeta, "late");
  const tl = await post(esMeta.token_endpoint, new URLSearchParams({ grant_type: "authorization_code", code: al.code, redirect_uri: REDIRECT, code_verifier: al.verifier }), { ...FORM, Authorization: basic("late", "late-secret") });
  eq(tl.status, 200, `token for the runtime client (${JSON.stringify(tl.body)})`);
  const pl = decodeJwt(tl.body.id_token).payload;
  eq([pl.aud, pl.hd, pl.groups], ["late", "other.org", ["mcp-users", "x"]], "new claim hd and merged groups");

  for (const [name, o] of [["tenant", op], ["es256", es]]) {
    const unexpected = o.stderr().split("\n").filter((l) => l.trim() && !/Unsupported runtime/.test(l));
    assert(unexpected.length === 0, `${name} provider wrote to stderr`, unexpected);
  }
  console.error(`provider startup: ${op.ms} ms (RS256, path issuer), ${es.ms} ms (ES256)`);
}

let code = 0;
try {
  await main();
  console.log("ok");
} catch (e) {
  code = 1;
  console.error(`FAIL: ${e.message}`);
  if (e.extra !== undefined) console.error(JSON.stringify(e.extra, null, 2).slice(0, 4000));
  if (e.details) console.error(JSON.stringify(e.details, null, 2).slice(0, 4000));
  if (!e.extra && !e.details) console.error(e.stack);
  for (const c of children) if (c.stderrText) console.error(`provider stderr:\n${c.stderrText}`);
} finally {
  for (const c of children) c.kill("SIGTERM");
}
process.exit(code);
