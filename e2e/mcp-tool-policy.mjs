#!/usr/bin/env node
// The per-tool policy with a real MCP client (the official TypeScript SDK 1.32.2, which sends no
// Mcp-Method/Mcp-Name headers: verify reads the body Traefik forwards) through a real Traefik:
//
//   node e2e/mcp-tool-policy.mjs http://localhost:PORT/mcp ALLOWED_TOOL PROTECTED_TOOL
//
// 1. log in (401 → discovery → registration → browser step → code exchange) with the scope the
//    server advertises; call ALLOWED_TOOL: it works
// 2. call PROTECTED_TOOL: verify answers 403 insufficient_scope naming the scope it needs; the
//    SDK steps up (a new authorization asking for that scope); the browser step approves the
//    consent page that names the new scope; finishAuth; the call is retried and works
//
// The client registers without the refresh_token grant: SDK 1.32.2 answers a 403 by refreshing
// first when it holds a refresh token, and a refresh cannot widen a grant (RFC 6749 §6), so the
// step-up would stop there. Prints ONE JSON line; bounded: 60 s.

import crypto from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { browserLogin, FlowError } from "./browser-login.mjs";
import { MemoryProvider } from "./sdk-provider.mjs";
import { fetchRecordingInto, runMain, startReport, textOf } from "./lib/report.mjs";

const [mcpUrl, allowedTool, protectedTool] = process.argv.slice(2);
const out = { ok: false, http: [] };
const finish = startReport(out);
const recordingFetch = fetchRecordingInto(out.http);

const scopeOf = (token) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).scope;

/** Runs `action` on a connected client; an UnauthorizedError means: log in (again), then retry. */
async function withLogin(provider, action, label) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
    const client = new Client({ name: "mcp-gateway-e2e-policy", version: "1.0.0" });
    try {
      await client.connect(transport);
      const result = await action(client);
      await client.close().catch(() => {});
      return result;
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
      const authUrl = provider.lastAuthorizationUrl;
      if (!authUrl) throw new FlowError(`${label}: unauthorized, and no authorization URL`);
      out[`${label}_authorization_scope_${attempt}`] = authUrl.searchParams.get("scope");
      const issuer = `${authUrl.protocol}//${authUrl.host}`;
      const login = await browserLogin(authUrl, { redirectUri: provider.redirectUrl, issuer, strict: false });
      out[`${label}_consent_pages_${attempt}`] = login.steps.filter((s) => String(s.url || "").includes("/consent")).length;
      if (!login.code) throw new FlowError(`${label}: the login gave no code`);
      await transport.finishAuth(login.code);
      provider.lastAuthorizationUrl = undefined;
    }
  }
  throw new FlowError(`${label}: still unauthorized after logging in`);
}

async function main() {
  const redirectUrl = `http://127.0.0.1:${20000 + crypto.randomInt(40000)}/oauth/callback`;
  const provider = new MemoryProvider(redirectUrl, { grantTypes: ["authorization_code"] });

  const allowed = await withLogin(provider, (c) => c.callTool({ name: allowedTool, arguments: { message: "hi" } }), "allowed");
  out.allowed_ok = !allowed.isError;
  out.first_scope = scopeOf(provider.tokens().access_token);

  const stepped = await withLogin(provider, (c) => c.callTool({ name: protectedTool, arguments: {} }), "protected");
  out.protected_ok = !stepped.isError;
  out.protected_text_length = textOf(stepped).length;
  out.final_scope = scopeOf(provider.tokens().access_token);
  const refused = out.http.find((h) => h.status === 403);
  out.refusal = refused ? { status: refused.status, www_authenticate: refused.www_authenticate } : null;
  out.ok = true;
}

runMain(main, finish);
