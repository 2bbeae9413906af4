-- wrk: each request is one POST /v1/deposits of 1 cent into a random user's wallet, with a
-- bearer token and an Idempotency-Key never used before. users.lua is written by setup.py.
dofile(os.getenv("KIZO_WRK_USERS"))

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
  local user = users[math.random(#users)]
  local body = '{"account_id":"' .. user.wallet .. '","amount":1}'
  local headers = {
    ["Authorization"] = "Bearer " .. user.token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "wrk-" .. os.time() .. "-" .. thread_id .. "-" .. sent,
  }
  return wrk.format("POST", "/v1/deposits", headers, body)
end
