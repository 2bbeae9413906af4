-- wrk: each request is one authenticated wallet-API request with an Idempotency-Key never used
-- before. KIZO_WRK_REQUEST picks it: `transfers` (the default; 1 cent from a random user to
-- another, POST /v1/transfers) or `deposits` (1 cent into a random user's wallet, POST
-- /v1/deposits). users.lua is written by setup.py.
--
-- The request text is assembled from parts made once per user (wrk.format builds a header
-- table per request): wrk shares the two cores with the server, so what it spends is taken
-- from the figure. The request is the same as wrk.format's (headers in a fixed order).
dofile(os.getenv("KIZO_WRK_USERS"))
local kind = os.getenv("KIZO_WRK_REQUEST") or "transfers"

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local heads = {}
local key_prefix
local sent = 0

function init(args)
  math.randomseed(thread_id * 7919 + os.time())
  local host = wrk.headers["Host"]
  for i, user in ipairs(users) do
    heads[i] = "POST /v1/" .. kind .. " HTTP/1.1\r\nHost: " .. host ..
      "\r\nAuthorization: Bearer " .. user.token ..
      "\r\nContent-Type: application/json\r\nIdempotency-Key: "
  end
  key_prefix = "wrk-" .. os.time() .. "-" .. thread_id .. "-"
end

function request()
  sent = sent + 1
  local from = math.random(#users)
  local body
  if kind == "deposits" then
    body = '{"account_id":"' .. users[from].wallet .. '","amount":1}'
  else
    local to = math.random(#users - 1)
    if to >= from then to = to + 1 end
    body = '{"from_account_id":"' .. users[from].wallet ..
      '","to":{"account_id":"' .. users[to].wallet .. '"},"amount":1}'
  end
  return heads[from] .. key_prefix .. sent .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end
