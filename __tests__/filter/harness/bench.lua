-- The filter benchmark, run inside one harness worker (driver op "bench"): the full
-- envoy_on_request decision of lua/envoy/filter.lua against a real Redis, and the bare
-- FCALL ws_admit round trip over the same RESP client, in the same process and run.
-- Times with socket.gettime() (gettimeofday, microseconds). Each sample is followed by
-- an untimed release so every decision admits onto one of the candidate pods.
local socket = require("socket")
local gettime = socket.gettime

local M = {}

local function percentiles(xs)
  table.sort(xs)
  local function p(q) return xs[math.max(1, math.ceil(q * #xs))] * 1e6 end
  return { n = #xs, p50_us = p(0.50), p90_us = p(0.90), p99_us = p(0.99), max_us = xs[#xs] * 1e6 }
end

local UPGRADE = {
  { ":method", "GET" }, { ":path", "/ws" }, { ":authority", "bench.test" }, { ":scheme", "http" },
  { "connection", "Upgrade" }, { "upgrade", "websocket" }, { "sec-websocket-version", "13" },
  { "sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==" }, { "user-agent", "bench" },
}

-- One envoy_on_request, timed from the coroutine's start to its end (the decision is
-- made: override and metadata set, or a local reply).
local function decide(ctx)
  local api = ctx.api
  local stream = { metadata = {}, remote = "203.0.113.9:40000" }
  local side = { headers_passed = false, state = "new" }
  stream.request = side
  side.headers = api.headers(UPGRADE, function() return side.headers_passed end)
  local h = api.handle(stream, "request", ctx.env)
  local co = coroutine.create(ctx.filter.envoy_on_request)
  local t0 = gettime()
  local ok, what = coroutine.resume(co, h)
  local dt = gettime() - t0
  if not ok then error("envoy_on_request failed: " .. tostring(what)) end
  side.headers_passed = true
  return dt, stream
end

-- What the agent does for the bench's proxy before anything is admitted (lua/redis/README.md):
-- an epoch, then its healthy hosts on a committed slot, then the end of the recovery.
local function prepare(client, calls, proxy, pods)
  local function run(entry)
    local r, err = client:fcall(entry.fn, entry.keys, entry.args)
    if r == nil or require("resp").is_error(r) then error(entry.fn .. " failed: " .. tostring(err or r)) end
    return r
  end
  run(calls.recover("begin", proxy, "be0c4be0c4be0c40"))
  run(calls.recover("done", proxy))
  local slot = run(calls.hosts("claim", proxy))
  run(calls.hosts("add", proxy, slot, pods))
  run(calls.hosts("commit", proxy, slot))
  -- A recovery lasts at least its minimum window (3 s): wait it out, as the agents do.
  local deadline = gettime() + 10
  while run(calls.beat(proxy, slot))[2] > 0 do
    if gettime() > deadline then error("the recovery did not end within 10 s") end
    socket.sleep(0.1)
  end
end

function M.run(c, ctx)
  local n, warm = c.n or 10000, c.warmup or 1000
  local resp = require("resp")
  local loader = require("settings_loader")
  local S = assert(loader.load(os.getenv("WS_LUA_DIR") .. "/settings.lua"))
  local calls = require("admission").new(S)
  local client = resp.new(loader.redis_options(S))
  local proxy = loader.proxy_id()
  prepare(client, calls, proxy, c.pods)

  -- Interleaved, so both measurements see the same machine noise: per iteration one bare
  -- FCALL ws_admit (the keys and arguments the filter sends) and one full decision through
  -- filter.lua, each followed by an untimed release (ws_leases X; for the filter's, its
  -- envoy_on_response on a backend's 500).
  local bare, full = {}, {}
  for i = 1, warm + n do
    local id = proxy .. "|000000|" .. i .. "|abcdef"
    local admit = calls.admit(id)
    local t0 = gettime()
    local r = client:fcall(admit.fn, admit.keys, admit.args)
    local dt = gettime() - t0
    assert(type(r) == "table" and r[1] == "ADMITTED", "bare admit did not admit: " .. tostring(r and (r.err or r[1])))
    local rel = calls.leases({ { "X", id, r[2] } })
    client:fcall(rel.fn, rel.keys, rel.args)
    if i > warm then bare[#bare + 1] = dt end

    local fdt, stream = decide(ctx)
    assert(stream.override, "decision did not admit")
    ctx.new_side(stream, "response", { { ":status", "500" } })
    if i > warm then full[#full + 1] = fdt end
  end

  local d, b = percentiles(full), percentiles(bare)
  return { decision = d, fcall = b, ratio_p50 = d.p50_us / b.p50_us, ratio_p99 = d.p99_us / b.p99_us }
end

return M
