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
import { fetchRecordingInto, startReport, textOf } from "./lib/report.mjs";

const [mcpUrl, token, allowedTool, protectedTool] = process.argv.slice(2);
const out = { ok: false, http: [] };
const finish = startReport(out);

// Each exchange with the Mcp-* headers the client sent and what its body names.
const recordingFetch = fetchRecordingInto(out.http, (input, init) => {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  const seen = { mcp_method: headers.get("mcp-method"), mcp_name: headers.get("mcp-name") };
  if (typeof init.body === "string") {
    try {
      const body = JSON.parse(init.body);
      seen.body_method = body.method ?? null;
      seen.body_name = body.params?.name ?? null;
    } catch {}
  }
  return seen;
});

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
finish();
