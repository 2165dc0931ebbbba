#!/usr/bin/env node
// The browser step (browser-login.mjs) as a command, for clients that are not written in
// JavaScript (the Python MCP SDK's callback handler) and for a BROWSER=… stand-in:
//
//   node e2e/browser-login-cli.mjs AUTHORIZATION_URL REDIRECT_URI [ISSUER]
//
// Prints ONE JSON line on stdout: {"ok":true,"code","state","iss","callback_url","steps"} or
// {"ok":false,"error",…}; exit status 0 only when the gateway redirected to REDIRECT_URI with a code.

import { browserLogin } from "./browser-login.mjs";

const [authorizationUrl, redirectUri, issuer] = process.argv.slice(2);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
if (!authorizationUrl || !redirectUri) {
  emit({ ok: false, error: "usage: browser-login-cli.mjs AUTHORIZATION_URL REDIRECT_URI [ISSUER]" });
  process.exit(2);
}
try {
  const r = await browserLogin(new URL(authorizationUrl), { redirectUri, issuer: issuer || undefined });
  emit({ ok: !!r.code, code: r.code, state: r.state, iss: r.iss, callback_url: r.callbackUrl, steps: r.steps });
  process.exit(r.code ? 0 : 1);
} catch (e) {
  emit({ ok: false, error: e?.message || String(e), details: e?.details });
  process.exit(1);
}
