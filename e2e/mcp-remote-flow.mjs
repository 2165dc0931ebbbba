#!/usr/bin/env node
// mcp-remote (the stdio-to-remote bridge desktop MCP clients run) logging in through the
// gateway and calling a tool, as a user of Claude Desktop or Cursor would, with the browser step
// driven headlessly (browser-login.mjs).
//
//   node e2e/mcp-remote-flow.mjs MCP_URL ISSUER
//
// 1. Starts e2e/node_modules/mcp-remote as a stdio MCP server (the SDK's StdioClientTransport),
//    with its OAuth callback on 127.0.0.1:<free port>, its config in a fresh temp folder, and
//    BROWSER set to a script that records the URL it is asked to open (what `open` → xdg-open
//    runs when there is no desktop).
// 2. Takes the authorization URL from that record, or from mcp-remote's stderr ("Please
//    authorize this client by visiting: URL"), whichever comes first.
// 3. Browser step: authorize → consent → fake GitHub → callback → redirect to mcp-remote's
//    callback URL, which is then fetched, as the browser would, to hand mcp-remote the code.
// 4. mcp-remote exchanges the code, connects, and the client's initialize, tools/list and
//    tools/call (echo) go through it to the MCP server behind the proxy.
//
// Prints ONE JSON line on stdout ({"ok":true,…} or {"ok":false,"error":…}). Bounded: 60 s
// overall (E2E_TIMEOUT_MS); mcp-remote is closed (and its process ended) on every exit path.

import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { browserLogin, redact } from "./browser-login.mjs";

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
console.log = (...a) => console.error(...a);

// An optional third argument: a Client ID Metadata Document URL, for --client-metadata-url.
const [mcpUrl, issuer, clientMetadataUrl] = process.argv.slice(2);
const timeoutMs = Number(process.env.E2E_TIMEOUT_MS || 60000);
const here = path.dirname(fileURLToPath(import.meta.url));
const out = { ok: false, mcp_url: mcpUrl, steps: [] };
const step = (name, extra = {}) => {
  out.steps.push(name);
  console.error(`[mcp-remote-flow] ${name}`, Object.keys(extra).length ? JSON.stringify(extra) : "");
};

if (!mcpUrl || !issuer) {
  emit({ ok: false, error: "usage: mcp-remote-flow.mjs MCP_URL ISSUER" });
  process.exit(2);
}

let transport;
let tmp;
let stderrText = "";
const cleanup = async () => {
  await transport?.close().catch(() => {});
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
};
const timer = setTimeout(async () => {
  emit({ ...out, ok: false, error: `timed out after ${timeoutMs} ms`, mcp_remote_stderr: stderrText.slice(-4000) });
  await cleanup();
  process.exit(3);
}, timeoutMs);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function main() {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-remote-e2e-"));
  const capture = path.join(tmp, "browser-urls.txt");
  const browser = path.join(tmp, "browser.sh");
  fs.writeFileSync(browser, '#!/bin/sh\nprintf \'%s\\n\' "$1" >> "$E2E_BROWSER_CAPTURE"\n', { mode: 0o755 });
  const callbackPort = await freePort();
  const redirectUri = `http://127.0.0.1:${callbackPort}/oauth/callback`;
  out.redirect_uri = redirectUri;

  transport = new StdioClientTransport({
    command: process.execPath,
    args: [
      path.join(here, "node_modules/mcp-remote/dist/proxy.js"),
      mcpUrl,
      String(callbackPort),
      "--host",
      "127.0.0.1",
      ...(clientMetadataUrl ? ["--client-metadata-url", clientMetadataUrl] : []),
    ],
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: tmp,
      MCP_REMOTE_CONFIG_DIR: path.join(tmp, "mcp-auth"),
      BROWSER: browser,
      E2E_BROWSER_CAPTURE: capture,
    },
    stderr: "pipe",
  });
  transport.stderr.on("data", (d) => {
    stderrText += d.toString();
  });

  // mcp-remote logs in on start-up, before it answers initialize: connect in the background.
  const client = new Client({ name: "mcp-gateway-e2e-mcp-remote", version: "1.0.0" });
  step("start_mcp_remote", { callback_port: callbackPort });
  const connected = client.connect(transport, { timeout: timeoutMs });
  connected.catch(() => {});

  // The authorization URL: from the BROWSER stand-in, or from the log line.
  let authUrl;
  const deadline = Date.now() + 30000;
  while (!authUrl && Date.now() < deadline) {
    if (fs.existsSync(capture)) {
      const first = fs.readFileSync(capture, "utf8").split("\n").find((l) => l.trim());
      if (first) {
        authUrl = first.trim();
        out.authorization_url_from = "BROWSER";
      }
    }
    if (!authUrl) {
      const m = stderrText.match(/Please authorize this client by visiting:\s*(\S+)/);
      if (m) {
        authUrl = m[1];
        out.authorization_url_from = "stderr";
      }
    }
    if (!authUrl) await new Promise((r) => setTimeout(r, 100));
  }
  if (!authUrl) throw new Error("mcp-remote printed no authorization URL within 30 s");
  const u = new URL(authUrl);
  out.authorization_request = {
    endpoint: `${u.origin}${u.pathname}`,
    code_challenge_method: u.searchParams.get("code_challenge_method"),
    resource: u.searchParams.get("resource"),
    scope: u.searchParams.get("scope"),
    redirect_uri: u.searchParams.get("redirect_uri"),
  };
  step("authorization_url", out.authorization_request);

  const login = await browserLogin(u, { redirectUri, issuer });
  out.browser_steps = login.steps;
  out.callback_iss = login.iss;
  step("browser_login", { hops: login.steps.length });

  // The browser follows the last redirect: mcp-remote's callback server receives the code.
  const cb = await fetch(login.callbackUrl, { signal: AbortSignal.timeout(10000) });
  out.callback_status = cb.status;
  await cb.text().catch(() => "");
  step("callback", { status: cb.status });

  await connected;
  step("connected");
  const tools = await client.listTools();
  out.tools = tools.tools.map((t) => t.name);
  const result = await client.callTool({ name: "echo", arguments: { message: "hi (mcp-remote)" } });
  out.tool_result = (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
  out.tool_is_error = !!result.isError;
  step("tool_call", { result: out.tool_result });

  // What mcp-remote saved: a token for this resource (not printed).
  const files = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else files.push(path.relative(tmp, p));
    }
  };
  walk(path.join(tmp, "mcp-auth"));
  out.saved_files = files.filter((f) => !f.endsWith(".lock"));
  out.ok = true;
}

main().then(
  async () => {
    clearTimeout(timer);
    await cleanup();
    emit({ ...out, mcp_remote_stderr_tail: stderrText.slice(-1500) });
    process.exit(0);
  },
  async (e) => {
    clearTimeout(timer);
    await cleanup();
    emit({ ...out, ok: false, error: e?.message || String(e), details: e?.details, mcp_remote_stderr: stderrText.slice(-4000) });
    process.exit(1);
  },
);
