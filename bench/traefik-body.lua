-- wrk script for bench/verify.sh, runs (t0) and (t1): an MCP client's POST through Traefik (Host
-- mcp.localhost), with the bearer token and the JSON-RPC body (BENCH_BODY).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "body-request.lua")("traefik-body.lua")
wrk.method = "POST"
wrk.headers["Host"]          = "mcp.localhost"
wrk.headers["Accept"]        = "application/json, text/event-stream"
