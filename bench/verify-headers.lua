-- wrk script for bench/verify.sh: sends the headers Traefik's ForwardAuth
-- middleware would send to the verify service for a request that should be
-- allowed.  The bearer token comes from the environment (BENCH_TOKEN) so it
-- never has to be written into a file or put on wrk's command line.
--
-- Everything is set at top level: wrk runs this file once per thread and builds
-- the (constant) request from wrk.method/wrk.headers after that, so there is no
-- per-request Lua work and the measurement stays comparable to plain `wrk -H`.

local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("verify-headers.lua: BENCH_TOKEN is not set")
end

local function env_or(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

wrk.method = "GET"
wrk.headers["Authorization"]      = "Bearer " .. token
wrk.headers["X-Forwarded-Proto"]  = env_or("BENCH_FWD_PROTO", "http")
wrk.headers["X-Forwarded-Host"]   = env_or("BENCH_FWD_HOST", "mcp.localhost")
wrk.headers["X-Forwarded-Uri"]    = env_or("BENCH_FWD_URI", "/mcp")
wrk.headers["X-Forwarded-Method"] = env_or("BENCH_FWD_METHOD", "POST")
