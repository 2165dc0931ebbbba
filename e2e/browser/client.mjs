// The "MCP client" of the browser tests: a loopback redirect receiver, registered at the
// gateway as a public client; authorization URLs with PKCE S256; the code exchange.
import { createHash, randomBytes } from "node:crypto";
import { createServer } from "node:http";

/** [`startClient`], or `fail(why)` when the client cannot start. */
export async function startClientOr(fail, issuer, name) {
  try {
    return await startClient(issuer, name);
  } catch (e) {
    fail(e.message);
  }
}

/** Registers `name` at `issuer`; `received` collects the redirects that reach the client. */
export async function startClient(issuer, name) {
  const received = [];
  const receiver = createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    // Only the redirect counts: the browser also asks for /favicon.ico.
    if (url.pathname === "/callback") received.push(url);
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>Client</title><p>Back at the MCP client.</p>");
  });
  await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
  const redirectUri = `http://127.0.0.1:${receiver.address().port}/callback`;
  const reg = await (await fetch(`${issuer}/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_name: name, redirect_uris: [redirectUri], token_endpoint_auth_method: "none" }),
  })).json();
  if (!reg.client_id) throw new Error(`registration failed: ${JSON.stringify(reg)}`);

  /** A fresh authorization URL and its PKCE verifier. */
  function authorizeUrl() {
    const verifier = randomBytes(32).toString("base64url");
    const challenge = createHash("sha256").update(verifier).digest("base64url");
    const url = new URL(`${issuer}/authorize`);
    url.search = new URLSearchParams({
      response_type: "code", client_id: reg.client_id, redirect_uri: redirectUri,
      code_challenge: challenge, code_challenge_method: "S256", state: randomBytes(8).toString("hex"),
    }).toString();
    return { url: url.toString(), verifier };
  }

  /** The token answer for `code`. */
  async function redeem(code, verifier) {
    const res = await fetch(`${issuer}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "authorization_code", code, code_verifier: verifier, client_id: reg.client_id, redirect_uri: redirectUri }),
    });
    return res.json();
  }

  return { received, redirectUri, clientId: reg.client_id, authorizeUrl, redeem, close: () => receiver.close() };
}
