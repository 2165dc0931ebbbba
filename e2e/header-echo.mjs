#!/usr/bin/env node
// A stand-in MCP backend for the header-spoofing tests: answers every request with 200 and a
// JSON echo of what the proxy forwarded (method, URL, header lines, body), so a test can see which
// identity headers reached the backend. No dependencies.
//
//   node e2e/header-echo.mjs [PORT]     (0 or none: any free port; prints `listening PORT`)

import http from "node:http";

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    // rawHeaders keeps every copy of a repeated header and the exact name as sent.
    const raw = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) raw.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
    const body = JSON.stringify({
      method: req.method,
      url: req.url,
      headers: req.headers,
      raw_headers: raw,
      body: Buffer.concat(chunks).toString("utf8"),
    });
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
