-- wrk script for bench/verify.sh's run (d): the ForwardAuth request of verify-headers.lua with
-- a DPoP-bound token (Authorization: DPoP) and a fresh proof on every request, read from the
-- file DPOP_PROOFS (one proof per line, each with its own jti; bench/verify.sh makes them with
-- examples/dpop_proofs.rs). Thread k of n sends lines k, k+n, k+2n, …: no proof twice, so a
-- run must not need more requests than the file has lines (verify would refuse the replay and
-- the run would fail on its non-2xx answers).

-- The ForwardAuth headers of verify-headers.lua, then the DPoP scheme instead of Bearer.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "verify-headers.lua")
local file = os.getenv("DPOP_PROOFS")
if file == nil or file == "" then
  error("verify-dpop.lua: DPOP_PROOFS must be set")
end

local threads = 0
function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
  thread:set("count", tonumber(os.getenv("BENCH_THREADS") or "2"))
end

local proofs, next_proof
function init(args)
  proofs = {}
  local n = 0
  for line in io.lines(file) do
    if n % count == index then proofs[#proofs + 1] = line end
    n = n + 1
  end
  next_proof = 1
end

local headers = {}
for name, value in pairs(wrk.headers) do headers[name] = value end
headers["Authorization"] = "DPoP " .. os.getenv("BENCH_TOKEN")

function request()
  headers["DPoP"] = proofs[next_proof]
  next_proof = next_proof + 1
  if next_proof > #proofs then next_proof = 1 end
  return wrk.format("GET", nil, headers)
end
