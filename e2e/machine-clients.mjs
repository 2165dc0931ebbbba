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
// Each discovers the authorization server from the 401, gets its token, lists the tools and
// calls `tool` (default echo). Prints ONE JSON line: {ok, tools, called, text, http, error};
// bounded: 60 s. The enterprise IdP's test CA comes in NODE_EXTRA_CA_CERTS.

import {
  Client,
  ClientCredentialsProvider,
  CrossAppAccessProvider,
  PrivateKeyJwtProvider,
  StreamableHTTPClientTransport,
  requestJwtAuthorizationGrant,
} from "@modelcontextprotocol/client";
import { fetchRecordingInto, runMain, startReport, textOf } from "./lib/report.mjs";

const [mcpUrl] = process.argv.slice(2);
const cfg = JSON.parse(process.env.MACHINE || "{}");
const out = { ok: false, mode: cfg.mode, http: [] };
const finish = startReport(out);
const recordingFetch = fetchRecordingInto(out.http, (input, init) => {
  const body = typeof init.body === "string" ? init.body : init.body instanceof URLSearchParams ? init.body.toString() : "";
  const form = new URLSearchParams(body);
  return form.get("grant_type") ? { grant_type: form.get("grant_type") } : {};
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
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    authProvider: provider(),
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
  await client.close().catch(() => {});
  out.ok = true;
}, finish);
