#!/usr/bin/env node
// A stand-in for GitHub's OAuth app endpoints and REST API, for the end-to-end tests.
// No dependencies; loopback only. It reproduces the quirks a real GitHub integration has to get
// right:
//
//   GET  /login/oauth/authorize      auto-approves: 302 to redirect_uri?code=…&state=…
//                                    (unknown client_id or a redirect_uri outside the registered
//                                    callback: 302 with error=redirect_uri_mismatch, like GitHub)
//   POST /login/oauth/access_token   form-encoded answer (access_token=…&scope=…&token_type=bearer)
//                                    unless `Accept: application/json`; a bad, used or expired code,
//                                    or wrong client credentials, answers HTTP 200 with
//                                    {"error":"bad_verification_code",…} (errors in the body)
//   GET  /user                       `Authorization: Bearer|token <t>` →
//                                    {"id":1001,"login":"alice","name":"Alice","email":null,…}
//   GET  /user/emails                the primary verified address is NOT the first entry; needs the
//                                    `user:email` or `user` scope (404 otherwise, like GitHub)
//   every endpoint but /authorize    needs a `User-Agent` header (403 otherwise, like GitHub's API)
//
// Test controls (not GitHub): GET /_fake/requests (JSON log of every request: method, path,
// headers), POST /_fake/login?login=bob&id=1002 (who the next authorizations log in as).
//
// Environment: FAKE_GITHUB_LOGIN (default alice), FAKE_GITHUB_ID (default 1001),
// FAKE_GITHUB_CLIENT_ID / FAKE_GITHUB_CLIENT_SECRET (when set, enforced),
// FAKE_GITHUB_CALLBACK (when set, redirect_uri must start with it, as GitHub requires),
// FAKE_GITHUB_PORT or argv[2]: port (0 = any; the real one is printed as `listening PORT`).

import http from "node:http";
import crypto from "node:crypto";
import { readBody as readBodyUpTo } from "./lib/http.mjs";

const env = process.env;
const port = Number(process.argv[2] ?? env.FAKE_GITHUB_PORT ?? 0);
const clientId = env.FAKE_GITHUB_CLIENT_ID || null;
const clientSecret = env.FAKE_GITHUB_CLIENT_SECRET || null;
const callback = env.FAKE_GITHUB_CALLBACK || null;

let who = { login: env.FAKE_GITHUB_LOGIN || "alice", id: Number(env.FAKE_GITHUB_ID || 1001) };
const codes = new Map(); // code -> { clientId, redirectUri, scope, user, expires }
const tokens = new Map(); // access token -> { scope, user }
const log = [];

const rand = (n) => crypto.randomBytes(n).toString("hex");
const titleCase = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function send(res, status, body, headers = {}) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  const type = typeof body === "string" ? "text/plain; charset=utf-8" : "application/json; charset=utf-8";
  res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

const readBody = (req) => readBodyUpTo(req, 64 * 1024);

// GitHub reads token-request parameters from the query string, a form body or a JSON body.
function params(url, req, body) {
  const p = Object.fromEntries(url.searchParams);
  const type = (req.headers["content-type"] || "").toLowerCase();
  if (type.includes("application/json") && body) {
    try {
      Object.assign(p, JSON.parse(body));
    } catch {
      /* ignored, like GitHub: the request then lacks parameters */
    }
  } else if (body) {
    Object.assign(p, Object.fromEntries(new URLSearchParams(body)));
  }
  return p;
}

function basicAuth(req) {
  const h = req.headers.authorization || "";
  const m = /^basic\s+(.+)$/i.exec(h);
  if (!m) return {};
  const raw = Buffer.from(m[1], "base64").toString("utf8");
  const i = raw.indexOf(":");
  return i < 0 ? {} : { client_id: decodeURIComponent(raw.slice(0, i)), client_secret: decodeURIComponent(raw.slice(i + 1)) };
}

function tokenAnswer(req, res, fields) {
  const accept = (req.headers.accept || "").toLowerCase();
  if (accept.includes("application/json")) return send(res, 200, fields);
  const text = new URLSearchParams(fields).toString();
  res.writeHead(200, { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function bearer(req) {
  const m = /^(?:bearer|token)\s+(\S+)\s*$/i.exec(req.headers.authorization || "");
  return m ? tokens.get(m[1]) : undefined;
}

const API_ERROR_401 = { message: "Requires authentication", documentation_url: "https://docs.github.com/rest", status: "401" };

async function handle(req, res) {
  const url = new URL(req.url, "http://fake-github.invalid");
  const path = url.pathname.replace(/\/+$/, "") || "/";
  log.push({ method: req.method, path, query: url.search, headers: req.headers });
  if (log.length > 1000) log.shift();

  if (path === "/_fake/requests") return send(res, 200, log);
  if (path === "/_fake/login" && req.method === "POST") {
    who = { login: url.searchParams.get("login") || who.login, id: Number(url.searchParams.get("id") || who.id) };
    return send(res, 200, who);
  }
  if (path === "/health") return send(res, 200, { ok: true });

  if (path === "/login/oauth/authorize" && req.method === "GET") {
    const q = url.searchParams;
    const redirectUri = q.get("redirect_uri") || callback;
    if (!redirectUri) return send(res, 400, "redirect_uri missing and no callback registered");
    if ((clientId && q.get("client_id") !== clientId) || (callback && !redirectUri.startsWith(callback))) {
      const to = new URL(redirectUri);
      to.searchParams.set("error", "redirect_uri_mismatch");
      to.searchParams.set("error_description", "The redirect_uri MUST match the registered callback URL for this application.");
      if (q.get("state")) to.searchParams.set("state", q.get("state"));
      res.writeHead(302, { Location: to.toString() });
      return res.end();
    }
    const code = rand(10);
    codes.set(code, {
      clientId: q.get("client_id"),
      redirectUri,
      scope: (q.get("scope") || "").split(/[\s,]+/).filter(Boolean).join(","),
      user: { ...who },
      expires: Date.now() + 10 * 60 * 1000,
    });
    const to = new URL(redirectUri);
    to.searchParams.set("code", code);
    if (q.get("state") !== null) to.searchParams.set("state", q.get("state"));
    res.writeHead(302, { Location: to.toString() });
    return res.end();
  }

  // Everything below is API-like: GitHub refuses requests without a User-Agent.
  if (!req.headers["user-agent"]) {
    return send(res, 403, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n");
  }

  if (path === "/login/oauth/access_token") {
    if (req.method !== "POST") return send(res, 404, { error: "Not Found" });
    const p = { ...basicAuth(req), ...params(url, req, await readBody(req)) };
    if ((clientId && p.client_id !== clientId) || (clientSecret && p.client_secret !== clientSecret) || !p.client_id) {
      return tokenAnswer(req, res, {
        error: "incorrect_client_credentials",
        error_description: "The client_id and/or client_secret passed are incorrect.",
        error_uri: "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials",
      });
    }
    const grant = codes.get(p.code);
    codes.delete(p.code); // single use, whatever happens next
    if (!grant || grant.expires < Date.now() || grant.clientId !== p.client_id) {
      return tokenAnswer(req, res, {
        error: "bad_verification_code",
        error_description: "The code passed is incorrect or expired.",
        error_uri: "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
      });
    }
    if (p.redirect_uri && p.redirect_uri !== grant.redirectUri) {
      return tokenAnswer(req, res, {
        error: "redirect_uri_mismatch",
        error_description: "The redirect_uri MUST match the registered callback URL for this application.",
        error_uri: "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch",
      });
    }
    const token = "gho_" + rand(18);
    tokens.set(token, { scope: grant.scope, user: grant.user });
    return tokenAnswer(req, res, { access_token: token, scope: grant.scope, token_type: "bearer" });
  }

  if ((path === "/user" || path === "/user/emails") && req.method === "GET") {
    const t = bearer(req);
    if (!t) return send(res, 401, API_ERROR_401);
    const scopeHeaders = { "X-OAuth-Scopes": t.scope.split(",").join(", "), "X-Accepted-OAuth-Scopes": path === "/user" ? "" : "user, user:email" };
    const { login, id } = t.user;
    if (path === "/user") {
      return send(res, 200, {
        login,
        id,
        node_id: "U_" + id,
        avatar_url: `https://avatars.githubusercontent.com/u/${id}?v=4`,
        html_url: `https://github.com/${login}`,
        type: "User",
        site_admin: false,
        name: titleCase(login),
        company: null,
        blog: "",
        location: null,
        email: null, // private e-mail: only /user/emails has it
        bio: null,
        created_at: "2011-01-25T18:44:36Z",
        updated_at: "2024-01-01T00:00:00Z",
      }, scopeHeaders);
    }
    const scopes = t.scope.split(",");
    if (!scopes.includes("user:email") && !scopes.includes("user")) {
      return send(res, 404, { message: "Not Found", documentation_url: "https://docs.github.com/rest/users/emails#list-email-addresses-for-the-authenticated-user", status: "404" }, scopeHeaders);
    }
    return send(res, 200, [
      { email: `${login}-old@example.org`, primary: false, verified: true, visibility: null },
      { email: `${id}+${login}@users.noreply.github.com`, primary: false, verified: true, visibility: null },
      { email: `${login}-unverified@example.net`, primary: false, verified: false, visibility: null },
      { email: `${login}@example.com`, primary: true, verified: true, visibility: "private" },
    ], scopeHeaders);
  }

  return send(res, 404, { message: "Not Found", documentation_url: "https://docs.github.com/rest" });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    if (!res.headersSent) send(res, 500, { message: String(e?.message || e) });
    else res.destroy();
  });
});
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));
