-- wrk: each request is one authenticated wallet-API request with an Idempotency-Key never used
-- before. KIZO_WRK_REQUEST picks it: `transfers` (the default; 1 cent from a random user to
-- another, POST /v1/transfers) or `deposits` (1 cent into a random user's wallet, POST
-- /v1/deposits). users.lua is written by setup.py.
dofile(os.getenv("KIZO_WRK_USERS"))
local kind = os.getenv("KIZO_WRK_REQUEST") or "transfers"

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  math.randomseed(thread_id * 7919 + os.time())
  sent = 0
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
  local headers = {
    ["Authorization"] = "Bearer " .. users[from].token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "wrk-" .. os.time() .. "-" .. thread_id .. "-" .. sent,
  }
  return wrk.format("POST", "/v1/" .. kind, headers, body)
end
