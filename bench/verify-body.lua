-- wrk script for bench/verify.sh, runs (s) and (p): /verify as Traefik's forwardAuth calls it with
-- forwardBody: the ForwardAuth headers, the bearer token and the MCP request's JSON-RPC body
-- (BENCH_BODY), on a GET. Everything is set once; no per-request Lua work.
local token = os.getenv("BENCH_TOKEN")
local body = os.getenv("BENCH_BODY")
if token == nil or token == "" or body == nil or body == "" then
  error("verify-body.lua: BENCH_TOKEN and BENCH_BODY must be set")
end
wrk.method = "GET"
wrk.body = body
wrk.headers["Authorization"]      = "Bearer " .. token
wrk.headers["Content-Type"]       = "application/json"
wrk.headers["X-Forwarded-Proto"]  = "http"
wrk.headers["X-Forwarded-Host"]   = "mcp.localhost"
wrk.headers["X-Forwarded-Uri"]    = "/mcp"
wrk.headers["X-Forwarded-Method"] = "POST"
