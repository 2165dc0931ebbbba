#!/usr/bin/env node
// Callers without a browser, with the MCP TypeScript SDK of the 2026-07-28 era
// (@modelcontextprotocol/client 2.4.0) and its own auth providers, through a real proxy:
//
//   MACHINE='{"mode": …}' node e2e/machine-clients.mjs http://localhost:PORT/mcp
//
// MACHINE's `mode`:
//   client_credentials  ClientCredentialsProvider {client_id, client_secret}
//   private_key_jwt     PrivateKeyJwtProvider {client_id, private_key_pem}
//   id_jag              CrossAppAccessProvider {client_id, client_secret} whose assertion
//                       callback exchanges the user's ID token at the enterprise IdP
//                       (requestJwtAuthorizationGrant: {idp_token_endpoint, id_token,
//                       idp_client_id, idp_client_secret}) for an ID-JAG
// With `dpop: true` the provider keeps a DpopSession (`dpop_alg`, default ES256): its token
// requests carry proofs, its tokens are DPoP-bound, and every MCP request carries a fresh proof;
// the script then tries the stolen token as a bearer token and replays the last request's proof
// with it (`stolen_bearer`, `replayed`: the statuses).
// Each discovers the authorization server from the 401, gets its token, lists the tools and
// calls `tool` (default echo). Prints ONE JSON line: {ok, tools, called, text, http, error};
// bounded: 60 s. The enterprise IdP's test CA comes in NODE_EXTRA_CA_CERTS.

import {
  Client,
  ClientCredentialsProvider,
  CrossAppAccessProvider,
  DpopSession,
  PrivateKeyJwtProvider,
  StreamableHTTPClientTransport,
  requestJwtAuthorizationGrant,
} from "@modelcontextprotocol/client";
import { fetchRecordingInto, runMain, startReport, textOf } from "./lib/report.mjs";

const [mcpUrl] = process.argv.slice(2);
const cfg = JSON.parse(process.env.MACHINE || "{}");
const out = { ok: false, mode: cfg.mode, http: [] };
const finish = startReport(out);
let lastProof;
const recordingFetch = fetchRecordingInto(out.http, (input, init) => {
  const body = typeof init.body === "string" ? init.body : init.body instanceof URLSearchParams ? init.body.toString() : "";
  const form = new URLSearchParams(body);
  const headers = new Headers(init.headers || (input instanceof Request ? input.headers : {}));
  const entry = form.get("grant_type") ? { grant_type: form.get("grant_type") } : {};
  const auth = headers.get("authorization");
  if (auth) entry.scheme = auth.split(" ")[0];
  if (headers.has("dpop")) {
    entry.dpop = true;
    if (auth && (init.method || "GET") === "POST") lastProof = { authorization: auth, dpop: headers.get("dpop"), method: init.method, body: init.body, headers };
  }
  return entry;
});

function provider() {
  switch (cfg.mode) {
    case "client_credentials":
      return new ClientCredentialsProvider({ clientId: cfg.client_id, clientSecret: cfg.client_secret });
    case "private_key_jwt":
      return new PrivateKeyJwtProvider({ clientId: cfg.client_id, privateKey: cfg.private_key_pem, algorithm: "ES256" });
    case "id_jag":
      return new CrossAppAccessProvider({
        clientId: cfg.client_id,
        clientSecret: cfg.client_secret,
        assertion: async ({ authorizationServerUrl, resourceUrl, scope, fetchFn }) => {
          out.exchange = { audience: String(authorizationServerUrl), resource: String(resourceUrl) };
          const grant = await requestJwtAuthorizationGrant({
            tokenEndpoint: cfg.idp_token_endpoint,
            audience: String(authorizationServerUrl),
            resource: String(resourceUrl),
            idToken: cfg.id_token,
            clientId: cfg.idp_client_id,
            clientSecret: cfg.idp_client_secret,
            scope,
            fetchFn,
          });
          return grant.jwtAuthGrant;
        },
      });
    default:
      throw new Error(`unknown mode ${cfg.mode}`);
  }
}

runMain(async () => {
  const authProvider = provider();
  if (cfg.dpop) {
    const session = await DpopSession.create({ alg: cfg.dpop_alg || "ES256" });
    authProvider.dpop = () => session;
    out.jkt = session.thumbprint;
  }
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    authProvider,
    fetch: recordingFetch,
  });
  const client = new Client({ name: `mcp-gateway-e2e-${cfg.mode}`, version: "1.0.0" });
  await client.connect(transport);
  const tools = await client.listTools();
  out.tools = tools.tools.length;
  const tool = cfg.tool || "echo";
  const result = await client.callTool({ name: tool, arguments: cfg.arguments ?? { message: `hello from ${cfg.mode}` } });
  out.called = !result.isError;
  out.text = textOf(result);
  if (cfg.dpop) {
    const tokens = await authProvider.tokens();
    out.token_type = tokens?.token_type;
    const steal = async (headers) => {
      const res = await fetch(mcpUrl, { method: "POST", headers, body: lastProof.body, signal: AbortSignal.timeout(15000) });
      return { status: res.status, www_authenticate: res.headers.get("www-authenticate") };
    };
    const common = { "content-type": "application/json", accept: "application/json, text/event-stream" };
    for (const name of ["mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name"]) {
      if (lastProof.headers.get(name)) common[name] = lastProof.headers.get(name);
    }
    out.stolen_bearer = await steal({ ...common, authorization: `Bearer ${tokens.access_token}` });
    out.replayed = await steal({ ...common, authorization: lastProof.authorization, dpop: lastProof.dpop });
  }
  await client.close().catch(() => {});
  out.ok = true;
}, finish);
