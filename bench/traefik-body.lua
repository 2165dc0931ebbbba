-- wrk script for bench/verify.sh, runs (t0) and (t1): an MCP client's POST through Traefik (Host
-- mcp.localhost), with the bearer token and the JSON-RPC body (BENCH_BODY).
local token = os.getenv("BENCH_TOKEN")
local body = os.getenv("BENCH_BODY")
if token == nil or token == "" or body == nil or body == "" then
  error("traefik-body.lua: BENCH_TOKEN and BENCH_BODY must be set")
end
wrk.method = "POST"
wrk.body = body
wrk.headers["Host"]          = "mcp.localhost"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"]  = "application/json"
wrk.headers["Accept"]        = "application/json, text/event-stream"
