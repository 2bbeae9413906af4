-- wrk: each request is one POST /v1/transfers of 1 cent from a random user to another, with
-- a bearer token and an Idempotency-Key never used before. users.lua is written by setup.py.
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
  local from = math.random(#users)
  local to = math.random(#users - 1)
  if to >= from then to = to + 1 end
  local body = '{"from_account_id":"' .. users[from].wallet ..
    '","to":{"account_id":"' .. users[to].wallet .. '"},"amount":1}'
  local headers = {
    ["Authorization"] = "Bearer " .. users[from].token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "wrk-" .. os.time() .. "-" .. thread_id .. "-" .. sent,
  }
  return wrk.format("POST", "/v1/transfers", headers, body)
end
