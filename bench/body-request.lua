-- What traefik-body.lua and verify-body.lua share: the bearer token (BENCH_TOKEN) and the MCP
-- request's JSON-RPC body (BENCH_BODY), both required, set once on the constant request.
-- Loaded with dofile; `script` names the caller in the error.
return function(script)
  local token = os.getenv("BENCH_TOKEN")
  local body = os.getenv("BENCH_BODY")
  if token == nil or token == "" or body == nil or body == "" then
    error(script .. ": BENCH_TOKEN and BENCH_BODY must be set")
  end
  wrk.body = body
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"]  = "application/json"
end
