#!/usr/bin/env node
// A per-request round-robin HTTP balancer over several upstreams: what a Kubernetes Service or a
// load balancer does in front of verify replicas, here so that Traefik's one forwardAuth address
// reaches two mcp-gateway-verify processes alternately. Loopback only; no dependencies.
//
//   node e2e/round-robin.mjs PORT http://127.0.0.1:A http://127.0.0.1:B …   (prints `listening PORT`)

import http from "node:http";

const [port, ...upstreams] = process.argv.slice(2);
if (!upstreams.length) {
  console.error("usage: round-robin.mjs PORT UPSTREAM_URL…");
  process.exit(2);
}
const targets = upstreams.map((u) => new URL(u));
const agent = new http.Agent({ keepAlive: true });
let next = 0;

const server = http.createServer((req, res) => {
  const target = targets[next++ % targets.length];
  const up = http.request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent },
    (upRes) => {
      res.writeHead(upRes.statusCode, upRes.rawHeaders);
      upRes.pipe(res);
    },
  );
  up.setTimeout(10000, () => up.destroy(new Error("upstream timeout")));
  up.on("error", (e) => {
    console.error(`upstream ${target.host}: ${e.message}`);
    if (!res.headersSent) res.writeHead(502, { "Content-Type": "text/plain" });
    res.end("bad gateway\n");
  });
  req.pipe(up);
});
server.listen(Number(port || 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
