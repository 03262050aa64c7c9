-- wrk script: GET /v2/keys/bench/k<random 0..9999>.
-- Pass "quorum" after "--" for a linearizable read (?quorum=true).
local counter = 0
local suffix = ""

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
  if args[1] == "quorum" then
    suffix = "?quorum=true"
  end
end

function request()
  return wrk.format("GET", "/v2/keys/bench/k" .. math.random(0, 9999) .. suffix)
end
