#!/usr/bin/env node
// A small MCP backend that speaks the 2026-07-28 protocol revision (and, through the SDK's
// stateless legacy fallback, the 2025 eras) over streamable HTTP at /mcp, built on
// @modelcontextprotocol/server 2.4.0. Its tools carry the names of server-everything's, so a
// test can swap one server for the other:
//
//   echo     {message}  -> "Echo: <message>"
//   get-env  {}         -> the process environment as JSON
//   add      {a, b}     -> "The sum of a and b is a+b."   (get-sum: the same, server-everything's name)
//
//   PORT=0 node e2e/mcp-2026-server.mjs     (PORT 0 or unset: any free port; prints `listening PORT`)
//
// createMcpHandler() serves a 2026-07-28 request (one that carries the per-request `_meta`
// envelope; a negotiating client learns the revision from `server/discover`) on a fresh server
// instance per request, and validates the SEP-2243 headers against the body before dispatch:
// a missing or disagreeing `Mcp-Method` / `Mcp-Name` is answered 400 with -32020
// (HeaderMismatch). Requests without the envelope (`initialize`, 2025-era clients) go to the
// stateless legacy fallback; GET and DELETE /mcp are answered 405 there.

import http from "node:http";
import { createMcpHandler, fromJsonSchema, McpServer } from "@modelcontextprotocol/server";

const text = (t) => ({ content: [{ type: "text", text: t }] });

function sum({ a, b }) {
  return text(`The sum of ${a} and ${b} is ${a + b}.`);
}

const sumSchema = () =>
  fromJsonSchema({
    type: "object",
    properties: {
      a: { type: "number", description: "First number" },
      b: { type: "number", description: "Second number" },
    },
    required: ["a", "b"],
  });

// One factory backs both eras: a fresh instance per request.
function makeServer() {
  const server = new McpServer({ name: "mcp-gateway-e2e-2026-server", version: "1.0.0" });
  server.registerTool(
    "echo",
    {
      title: "Echo Tool",
      description: "Echoes back the input string",
      inputSchema: fromJsonSchema({
        type: "object",
        properties: { message: { type: "string", description: "Message to echo" } },
        required: ["message"],
      }),
    },
    async ({ message }) => text(`Echo: ${message}`),
  );
  server.registerTool(
    "get-env",
    { title: "Print Environment Tool", description: "Returns all environment variables" },
    async () => text(JSON.stringify(process.env, null, 2)),
  );
  server.registerTool("add", { description: "Returns the sum of two numbers", inputSchema: sumSchema() }, sum);
  server.registerTool("get-sum", { description: "Returns the sum of two numbers", inputSchema: sumSchema() }, sum);
  return server;
}

const handler = createMcpHandler(makeServer, {
  onerror: (e) => console.error(`mcp: ${e?.message ?? e}`),
});

// node:http <-> the handler's web-standard fetch face (what @modelcontextprotocol/node's
// toNodeHandler does; that package is not installed here).
async function toWebRequest(req, signal) {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const hasBody = req.method !== "GET" && req.method !== "HEAD" && chunks.length > 0;
  return new Request(`http://${req.headers.host ?? "127.0.0.1"}${req.url}`, {
    method: req.method,
    headers,
    body: hasBody ? Buffer.concat(chunks) : undefined,
    signal,
  });
}

async function writeWebResponse(res, response) {
  const headers = {};
  response.headers.forEach((value, name) => {
    if (name === "set-cookie") return;
    headers[name] = value;
  });
  const cookies = response.headers.getSetCookie?.() ?? [];
  if (cookies.length) headers["set-cookie"] = cookies;
  res.writeHead(response.status, headers);
  if (!response.body) return res.end();
  res.flushHeaders();
  const reader = response.body.getReader();
  res.on("close", () => reader.cancel().catch(() => {}));
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      res.write(value);
    }
  } catch {}
  res.end();
}

const server = http.createServer(async (req, res) => {
  const path = (req.url ?? "/").split("?")[0];
  if (path !== "/mcp") {
    res.writeHead(404, { "Content-Type": "text/plain" });
    return res.end("not found\n");
  }
  const abort = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) abort.abort();
  });
  try {
    const request = await toWebRequest(req, abort.signal);
    await writeWebResponse(res, await handler.fetch(request));
  } catch (e) {
    console.error(`mcp: ${e?.stack ?? e}`);
    if (!res.headersSent) res.writeHead(500, { "Content-Type": "text/plain" });
    res.end();
  }
});

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
