-- wrk script for bench/verify.sh, runs (s) and (p): /verify as Traefik's forwardAuth calls it with
-- forwardBody: the ForwardAuth headers, the bearer token and the MCP request's JSON-RPC body
-- (BENCH_BODY), on a GET. Everything is set once; no per-request Lua work.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "body-request.lua")("verify-body.lua")
wrk.method = "GET"
wrk.headers["X-Forwarded-Proto"]  = "http"
wrk.headers["X-Forwarded-Host"]   = "mcp.localhost"
wrk.headers["X-Forwarded-Uri"]    = "/mcp"
wrk.headers["X-Forwarded-Method"] = "POST"
