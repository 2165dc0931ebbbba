-- wrk script for bench/token_refresh.py: each thread (one connection each: -t N -c N) chains
-- refreshes, every answer's refresh token being the next request's, as a client does.
-- TOKENS_FILE holds one starting refresh token per thread; CLIENT_ID the public client.
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
end

function init(args)
  local file = assert(io.open(os.getenv("TOKENS_FILE"), "r"))
  local n = 0
  for line in file:lines() do
    n = n + 1
    if n == index then token = line end
  end
  file:close()
  client = os.getenv("CLIENT_ID")
  failures = 0
end

function request()
  return wrk.format("POST", "/token", { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "grant_type=refresh_token&client_id=" .. client .. "&refresh_token=" .. token)
end

function response(status, headers, body)
  if status == 200 then
    local next_token = body:match('"refresh_token":"([^"]+)"')
    if next_token then token = next_token end
  else
    failures = failures + 1
  end
end
