#!/usr/bin/env node
// A newcomer's first run: the MCP TypeScript SDK pointed at `mcp-gateway dev --upstream …`'s
// URL, logging in through the development login (browser-login.mjs, as user E2E_DEV_LOGIN),
// then calling server-everything's echo and a long-running tool whose progress notifications
// stream back (SSE) while it runs.
//
//   node e2e/dev-proxy-flow.mjs http://127.0.0.1:PORT/mcp
//
// Prints ONE JSON line: {ok, first_status, resource, echo, progress:[ms since the call…],
// result_ms, …}. Bounded: 60 s.

import crypto from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { browserLogin } from "./browser-login.mjs";
import { MemoryProvider } from "./sdk-provider.mjs";
import { startReport, textOf } from "./lib/report.mjs";

const mcpUrl = process.argv[2];
const out = { ok: false, mcp_url: mcpUrl };
const finish = startReport(out, { timedOut: () => ({ error: "timed out" }) });

try {
  const redirectUrl = `http://127.0.0.1:${20000 + crypto.randomInt(40000)}/oauth/callback`;
  const provider = new MemoryProvider(redirectUrl);
  let firstStatus;
  const fetchSeen = (input, init) =>
    fetch(input, init).then((res) => {
      firstStatus ??= res.status;
      return res;
    });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: fetchSeen });
  const client = new Client({ name: "mcp-gateway-dev-e2e", version: "1.0.0" });
  try {
    await client.connect(transport);
    throw new Error("the first connection was not refused");
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  out.first_status = firstStatus;
  out.resource = provider.lastAuthorizationUrl?.searchParams.get("resource") ?? null;
  const issuer = provider.discoveryState()?.authorizationServerMetadata?.issuer;
  const login = await browserLogin(provider.lastAuthorizationUrl, { redirectUri: redirectUrl, issuer });
  await transport.finishAuth(login.code);

  const connected = new Client({ name: "mcp-gateway-dev-e2e", version: "1.0.0" });
  await connected.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider }));
  out.echo = textOf(await connected.callTool({ name: "echo", arguments: { message: "through dev" } }));

  // 3 steps over 3 s: each progress notification must arrive as it happens, not at the end.
  const started = Date.now();
  out.progress = [];
  const long = await connected.callTool(
    { name: "trigger-long-running-operation", arguments: { duration: 3, steps: 3 } },
    undefined,
    { onprogress: () => out.progress.push(Date.now() - started), timeout: 30000 },
  );
  out.result_ms = Date.now() - started;
  out.long_result = textOf(long);
  await connected.close().catch(() => {});
  out.ok = true;
} catch (e) {
  out.error = String(e?.stack ?? e);
}
finish();
