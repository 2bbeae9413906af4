-- wrk: a read flood. Each request is one authenticated wallet-API read of a random user's own
-- data: KIZO_WRK_READ picks `history` (GET /v1/accounts/{wallet}/transfers?limit=200, the
-- default) or `dashboard` (GET /v1/dashboard). users.lua is written by setup.py.
dofile(os.getenv("KIZO_WRK_USERS"))
local kind = os.getenv("KIZO_WRK_READ") or "history"

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local requests = {}

function init(args)
  math.randomseed(thread_id * 104729 + os.time())
  local host = wrk.headers["Host"]
  for i, user in ipairs(users) do
    local path = "/v1/dashboard"
    if kind == "history" then
      path = "/v1/accounts/" .. user.wallet .. "/transfers?limit=200"
    end
    requests[i] = "GET " .. path .. " HTTP/1.1\r\nHost: " .. host ..
      "\r\nAuthorization: Bearer " .. user.token .. "\r\n\r\n"
  end
end

function request()
  return requests[math.random(#requests)]
end
