#!/usr/bin/env node
// The per-tool policy with a client of the MCP 2026-07-28 era (@modelcontextprotocol/client
// 2.4.0), which sends `Mcp-Method` on every POST and `Mcp-Name` on tools/call, through a real
// proxy:
//
//   node e2e/mcp-2026-client.mjs http://localhost:PORT/mcp TOKEN ALLOWED_TOOL PROTECTED_TOOL
//
// Connects with the bearer TOKEN, calls ALLOWED_TOOL (it works) and PROTECTED_TOOL (verify
// refuses it with 403 insufficient_scope). Records every HTTP exchange with the Mcp-* headers
// the client sent, so the test sees what the policy was decided on. Prints ONE JSON line;
// bounded: 60 s.

import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
console.log = (...a) => console.error(...a);
const [mcpUrl, token, allowedTool, protectedTool] = process.argv.slice(2);
const out = { ok: false, http: [] };
const timer = setTimeout(() => {
  emit({ ...out, ok: false, error: "timed out" });
  process.exit(3);
}, Number(process.env.E2E_TIMEOUT_MS || 60000));

function recordingFetch(input, init = {}) {
  const url = typeof input === "string" ? input : input.url ?? String(input);
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  const entry = {
    method: init.method || "GET",
    url: url.split("?")[0],
    mcp_method: headers.get("mcp-method"),
    mcp_name: headers.get("mcp-name"),
  };
  if (typeof init.body === "string") {
    try {
      const body = JSON.parse(init.body);
      entry.body_method = body.method ?? null;
      entry.body_name = body.params?.name ?? null;
    } catch {}
  }
  out.http.push(entry);
  return fetch(input, { ...init, signal: init.signal ?? AbortSignal.timeout(15000) }).then((res) => {
    entry.status = res.status;
    const wa = res.headers.get("www-authenticate");
    if (wa) entry.www_authenticate = wa;
    return res;
  });
}

const textOf = (result) => (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

try {
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    authProvider: { token: async () => token },
    fetch: recordingFetch,
  });
  // The 2026-07-28 era is opt-in: probe the server and speak it when the server does.
  const client = new Client(
    { name: "mcp-gateway-e2e-2026", version: "1.0.0" },
    { versionNegotiation: { mode: "auto" } },
  );
  await client.connect(transport);
  out.protocol_version = transport.protocolVersion ?? null;
  out.era = client.getProtocolEra?.() ?? null;
  const allowed = await client.callTool({ name: allowedTool, arguments: { message: "hello 2026" } });
  out.allowed_ok = !allowed.isError && textOf(allowed).includes("hello 2026");
  try {
    const result = await client.callTool({ name: protectedTool, arguments: {} });
    out.protected_ok = !result.isError;
  } catch (e) {
    out.protected_ok = false;
    out.protected_error = String(e?.message ?? e);
  }
  await client.close().catch(() => {});
  out.ok = true;
} catch (e) {
  out.error = String(e?.stack ?? e);
}
clearTimeout(timer);
emit(out);
process.exit(0);
