#!/usr/bin/env node
// A real MCP client (the official TypeScript SDK) logging in through the gateway, as a user would,
// with the browser step driven headlessly (browser-login.mjs).
//
//   node e2e/mcp-client-flow.mjs http://localhost:PORT/mcp [CLIENT_METADATA_URL]
//
// With CLIENT_METADATA_URL the SDK uses that Client ID Metadata Document (its clientMetadataUrl)
// instead of registering, when the server advertises support for it.
//
// 1. connect → 401 from verify → the SDK discovers (RFC 9728 → RFC 8414), registers (RFC 7591),
//    and hands over the authorization URL (PKCE S256, resource, state)
// 2. browser step: authorize → consent (approve) → fake GitHub → callback → our redirect_uri
// 3. transport.finishAuth(code) (the SDK's code exchange), reconnect, tools/list, tools/call echo
// 4. refresh through the SDK's auth() (refresh_token grant): the refresh token must rotate, and the
//    new access token must work
// 5. a retry of the rotated-out refresh token while its successor is unused gets that same
//    successor (a client that lost the answer is not logged out); once the successor was used,
//    the rotated-out token must be refused (400 invalid_grant), and that reuse must revoke the
//    family (the newest refresh token refused too, its access token rejected by verify)
// 6. the authorization code cannot be redeemed again (400 invalid_grant)
//
// Prints ONE JSON line on stdout ({"ok":true,…} or {"ok":false,"error":…}); exits 0 only when every
// step ran (assertions on the values are the caller's: tests/it/e2e.rs). Bounded: 60 s overall.
// Env: E2E_TOKEN_AUTH_METHOD (none | client_secret_post | client_secret_basic; default none),
//      E2E_TIMEOUT_MS (default 60000).

import crypto from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError, auth } from "@modelcontextprotocol/sdk/client/auth.js";
import { browserLogin, FlowError, redact } from "./browser-login.mjs";
import { MemoryProvider } from "./sdk-provider.mjs";
import { emit, runMain, startReport } from "./lib/report.mjs";

// stdout carries exactly one JSON line: everything else goes to stderr.
console.info = (...a) => console.error(...a);

const mcpUrl = process.argv[2];
const clientMetadataUrl = process.argv[3] || undefined;
const authMethod = process.env.E2E_TOKEN_AUTH_METHOD || "none";
const timeoutMs = Number(process.env.E2E_TIMEOUT_MS || 60000);
const out = { ok: false, mcp_url: mcpUrl, token_endpoint_auth_method: authMethod, steps: [], http: [] };

if (!mcpUrl) {
  emit({ ok: false, error: "usage: mcp-client-flow.mjs MCP_URL" });
  process.exit(2);
}

const finish = startReport(out, {
  ms: timeoutMs,
  timedOut: () => ({ ok: false, error: `timed out after ${timeoutMs} ms`, last_step: out.steps.at(-1) }),
});

const step = (name, extra = {}) => {
  out.steps.push(name);
  console.error(`[flow] ${name}`, Object.keys(extra).length ? JSON.stringify(extra) : "");
};

/** fetch that records method, URL and status of every request the SDK makes. */
function tracingFetch(input, init = {}) {
  const url = typeof input === "string" ? input : input.url ?? String(input);
  const method = init.method || (typeof input === "object" && input.method) || "GET";
  const entry = { method, url: redact(url) };
  out.http.push(entry);
  const started = Date.now();
  return fetch(input, { ...init, signal: init.signal ?? AbortSignal.timeout(15000) }).then(
    (res) => {
      entry.status = res.status;
      entry.ms = Date.now() - started;
      const wa = res.headers.get("www-authenticate");
      if (wa) entry.www_authenticate = wa;
      return res;
    },
    (e) => {
      entry.error = String(e?.cause?.message || e?.message || e);
      throw e;
    },
  );
}

function jwtParts(token) {
  try {
    const [h, p] = token.split(".");
    const dec = (s) => JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
    return { header: dec(h), claims: dec(p) };
  } catch {
    return { header: null, claims: null };
  }
}

async function connectAndCall(provider, label) {
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: tracingFetch });
  const client = new Client({ name: "mcp-gateway-e2e", version: "1.0.0" });
  await client.connect(transport);
  const tools = await client.listTools();
  const result = await client.callTool({ name: "echo", arguments: { message: `hi (${label})` } });
  const text = (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
  await client.close().catch(() => {});
  return { tools: tools.tools.map((t) => t.name), text, isError: !!result.isError };
}

/** The token endpoint call the SDK makes for a refresh, made by hand to see the raw answer. */
async function rawRefresh(metadata, client, refreshToken) {
  const params = new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken });
  const headers = { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" };
  const method = client.token_endpoint_auth_method || "none";
  if (method === "client_secret_basic" && client.client_secret) {
    headers.Authorization = "Basic " + Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString("base64");
  } else {
    params.set("client_id", client.client_id);
    if (method === "client_secret_post" && client.client_secret) params.set("client_secret", client.client_secret);
  }
  const res = await tracingFetch(metadata.token_endpoint, { method: "POST", headers, body: params.toString() });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, error: json?.error ?? null, error_description: json?.error_description ?? null, cache_control: res.headers.get("cache-control"), refresh_token: json?.refresh_token, access_token: json?.access_token, body: json ? undefined : text.slice(0, 300) };
}

async function rawCodeRedeem(metadata, client, code, verifier, redirectUri) {
  const params = new URLSearchParams({ grant_type: "authorization_code", code, code_verifier: verifier, redirect_uri: redirectUri, client_id: client.client_id });
  if (client.client_secret && (client.token_endpoint_auth_method || "none") !== "none") params.set("client_secret", client.client_secret);
  const res = await tracingFetch(metadata.token_endpoint, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: params.toString() });
  const json = await res.json().catch(() => null);
  return { status: res.status, error: json?.error ?? null };
}

async function main() {
  const redirectUrl = `http://127.0.0.1:${20000 + crypto.randomInt(40000)}/oauth/callback`;
  const provider = new MemoryProvider(redirectUrl, { authMethod, clientMetadataUrl });
  out.redirect_uri = redirectUrl;

  // 1. First connection: must be refused and turned into an authorization URL by the SDK.
  step("connect_unauthenticated");
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: tracingFetch });
  const client = new Client({ name: "mcp-gateway-e2e", version: "1.0.0" });
  let unauthorized = false;
  let connectError;
  try {
    await client.connect(transport);
  } catch (e) {
    if (e instanceof UnauthorizedError) unauthorized = true;
    else connectError = e;
  }
  const first = out.http.find((h) => h.url.startsWith(mcpUrl));
  out.first_status = first?.status ?? null;
  out.first_www_authenticate = first?.www_authenticate ?? null;
  if (connectError) throw new FlowError(`first connect failed with ${connectError?.constructor?.name}: ${connectError?.message}`);
  if (!unauthorized) throw new FlowError("the first connection was not refused with 401 (no UnauthorizedError)");
  const authUrl = provider.lastAuthorizationUrl;
  if (!authUrl) throw new FlowError("the SDK did not produce an authorization URL");
  const disc = provider.discoveryState() ?? {};
  const metadata = disc.authorizationServerMetadata;
  if (!metadata) throw new FlowError("the SDK found no authorization server metadata");
  out.issuer = metadata.issuer;
  out.authorization_server = disc.authorizationServerUrl;
  out.resource_metadata = disc.resourceMetadata ?? null;
  out.as_metadata = {
    issuer: metadata.issuer,
    authorization_endpoint: metadata.authorization_endpoint,
    token_endpoint: metadata.token_endpoint,
    registration_endpoint: metadata.registration_endpoint,
    code_challenge_methods_supported: metadata.code_challenge_methods_supported,
    token_endpoint_auth_methods_supported: metadata.token_endpoint_auth_methods_supported,
    authorization_response_iss_parameter_supported: metadata.authorization_response_iss_parameter_supported,
  };
  const info = provider.clientInformation();
  out.client_id = info?.client_id ?? null;
  out.client_registration = info
    ? { has_secret: !!info.client_secret, token_endpoint_auth_method: info.token_endpoint_auth_method ?? null, client_secret_expires_at: info.client_secret_expires_at ?? null, has_registration_access_token: !!info.registration_access_token }
    : null;
  const q = authUrl.searchParams;
  out.authorization_request = {
    endpoint: `${authUrl.origin}${authUrl.pathname}`,
    response_type: q.get("response_type"),
    code_challenge_method: q.get("code_challenge_method"),
    has_code_challenge: !!q.get("code_challenge"),
    resource: q.get("resource"),
    scope: q.get("scope"),
    has_state: !!q.get("state"),
  };
  step("authorization_url", out.authorization_request);

  // 2. The browser.
  const login = await browserLogin(authUrl, { redirectUri: redirectUrl, issuer: metadata.issuer });
  out.browser_steps = login.steps;
  out.github_authorize_url = login.githubAuthorizeUrl ? redact(login.githubAuthorizeUrl) : null;
  out.callback = { has_code: !!login.code, code_count: login.codeCount, state_matches: login.state === provider.lastState, iss: login.iss };
  step("browser_login", { hops: login.steps.length });
  if (!login.code) throw new FlowError("the redirect to the client carries no code", { callback: redact(login.callbackUrl) });
  if (login.state !== provider.lastState) throw new FlowError("the redirect to the client carries the wrong state");

  // 3. The SDK's code exchange, then a working connection.
  const verifier = provider.codeVerifier();
  await transport.finishAuth(login.code);
  const tokens = provider.tokens();
  if (!tokens?.access_token) throw new FlowError("finishAuth saved no access token");
  const at = jwtParts(tokens.access_token);
  out.token = {
    token_type: tokens.token_type,
    expires_in: tokens.expires_in ?? null,
    scope: tokens.scope ?? null,
    has_refresh_token: !!tokens.refresh_token,
    jwt_header: at.header,
    claims: at.claims && { ...at.claims, jti: at.claims.jti ? "(present)" : undefined },
  };
  step("finish_auth", { token_type: tokens.token_type });

  const call1 = await connectAndCall(provider, "first");
  out.tools = call1.tools;
  out.tool_result = call1.text;
  out.tool_is_error = call1.isError;
  step("tool_call", { result: call1.text });

  // 4. Refresh the way the SDK does it (auth() with a stored refresh token).
  const before = provider.tokens();
  if (!before.refresh_token) throw new FlowError("no refresh token was issued");
  const result = await auth(provider, { serverUrl: mcpUrl, fetchFn: tracingFetch });
  const after = provider.tokens();
  out.refresh_result = result;
  if (result !== "AUTHORIZED" || !after?.refresh_token) throw new FlowError(`the SDK refresh did not authorize (result ${result})`, { authorization_url_after_refresh: provider.lastAuthorizationUrl !== authUrl });
  out.refresh_rotated = after.refresh_token !== before.refresh_token;
  out.access_token_changed = after.access_token !== before.access_token;
  step("refresh", { rotated: out.refresh_rotated });

  const call2 = await connectAndCall(provider, "after refresh");
  out.tool_result_after_refresh = call2.text;
  step("tool_call_after_refresh");

  // 5. A retry of the rotated-out refresh token (the answer was lost) gets the same successor.
  const clientInfo = provider.clientInformation();
  const retry = await rawRefresh(metadata, clientInfo, before.refresh_token);
  out.retry_same_successor = retry.status === 200 && retry.refresh_token === after.refresh_token && retry.access_token === after.access_token;
  step("rotated_refresh_retry", { status: retry.status, same: out.retry_same_successor });
  // The successor is used; from then on the rotated-out token is a replay ...
  const newest = await rawRefresh(metadata, clientInfo, after.refresh_token);
  if (newest.status !== 200) throw new FlowError(`the successor refresh token was refused (${newest.status})`, newest);
  const reuse = await rawRefresh(metadata, clientInfo, before.refresh_token);
  out.old_refresh = { ...reuse, refresh_token: undefined, access_token: undefined };
  out.old_refresh_refused = reuse.status === 400 && reuse.error === "invalid_grant";
  step("old_refresh_reuse", out.old_refresh);

  // ... which revokes the family: the newest refresh token and access token die with it.
  const family = await rawRefresh(metadata, clientInfo, newest.refresh_token);
  out.family_refresh = { ...family, refresh_token: undefined, access_token: undefined };
  out.family_refresh_refused = family.status === 400 && family.error === "invalid_grant";
  let lastStatus = null;
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const res = await fetch(mcpUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${newest.access_token}`, "Content-Type": "application/json", Accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "e2e", version: "1" } } }),
      signal: AbortSignal.timeout(5000),
    });
    await res.body?.cancel();
    lastStatus = res.status;
    if (res.status === 401) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  out.family_access_status = lastStatus;
  out.family_access_revoked = lastStatus === 401;
  step("family_revocation", { refresh: family.status, access: lastStatus });

  // 6. The authorization code is single-use.
  const again = await rawCodeRedeem(metadata, clientInfo, login.code, verifier, redirectUrl);
  out.code_reuse = again;
  out.code_reuse_refused = again.status === 400 && again.error === "invalid_grant";
  step("code_reuse", again);

  out.client_id = provider.clientInformation()?.client_id ?? null;
  out.registered = out.http.some((e) => e.method === "POST" && new URL(e.url).pathname === "/register");
  out.ok = true;
}

runMain(main, finish, (e) => ({
  error_type: e?.constructor?.name,
  details: e?.details,
  stack: e instanceof FlowError ? undefined : e?.stack,
}));
