-- wrk script: PUT /v2/keys/bench/k<random 0..9999> with a 64-byte value,
-- form-encoded exactly as etcd's v2 clients send it.
local counter = 0
local value = string.rep("v", 64)
local body = "value=" .. value
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  local path = "/v2/keys/bench/k" .. math.random(0, 9999)
  return wrk.format("PUT", path, headers, body)
end
