-- The filter benchmark, run inside one harness worker (driver op "bench"): the full
-- envoy_on_request decision of lua/envoy/filter.lua against a real Redis, and the bare
-- EVALSHA admit.lua round trip over the same RESP client, in the same process and run.
-- Times with socket.gettime() (gettimeofday, microseconds). Each sample is followed by
-- an untimed release so every decision admits onto one of the 3 candidate pods.
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

-- One envoy_on_request, timed from the coroutine's start to its first wait (the
-- decision is made: override set and waiting for body data, or a local reply).
local function decide(ctx)
  local api = ctx.api
  local stream = { metadata = {}, remote = "203.0.113.9:40000" }
  local side = { headers_passed = false, state = "new" }
  stream.request = side
  side.headers = api.headers(UPGRADE, function() return side.headers_passed end)
  local h = api.handle(stream, "request", ctx.env)
  local co = coroutine.create(ctx.filter.envoy_on_request)
  local t0 = gettime()
  local ok, what, payload = coroutine.resume(co, h)
  while ok and what == "http_call" do ok, what, payload = coroutine.resume(co, payload()) end
  local dt = gettime() - t0
  if not ok then error("envoy_on_request failed: " .. tostring(what)) end
  -- An admitted stream waits for client data, or (when this decision refreshed the host
  -- list) returns at once: docs/filter.md "one-way streams".
  if coroutine.status(co) == "dead" then what = "returned" end
  return dt, stream, what
end

local function release(ctx, stream)
  -- A non-101 answer makes envoy_on_response release the lease (untimed).
  ctx.new_side(stream, "response", { { ":status", "500" } })
end

function M.run(c, ctx)
  local n, warm = c.n or 10000, c.warmup or 1000
  local resp = require("resp")
  local dir = os.getenv("WS_LUA_DIR")
  local S = assert(require("settings_loader").load(dir .. "/settings.lua"))
  local client = resp.new({ host = S.redis_host, port = S.redis_port, password_file = S.redis_password_file,
    connect_timeout_ms = 1000, read_timeout_ms = 1000, scripts_dir = dir })
  local pods = c.pods
  local tag = "{" .. S.hash_tag .. "}"

  -- Interleaved, so both measurements see the same machine noise: per iteration one
  -- bare EVALSHA admit.lua (same keys and arguments as the filter sends) and one full
  -- decision through filter.lua, each followed by an untimed release.
  local keys = { tag .. ":rate", tag .. ":stats", tag .. ":leases", tag .. ":load", tag .. ":views", tag .. ":hosts" }
  local K = { tag .. ":leases", tag .. ":load", tag .. ":stats" }
  local view = require("keys").view_id(pods)
  local vargs = { view }
  for j, p in ipairs(pods) do vargs[1 + j] = p end
  assert(client:script("register_view", { tag .. ":views", tag .. ":hosts", tag .. ":load" }, vargs) == #pods)
  local bare, full = {}, {}
  for i = 1, warm + n do
    local id = "bench|000000|" .. i .. "|abcdef"
    local args = { S.rate_limit, S.rate_window_ms, S.max_connections_per_pod, S.lease_ttl_ms, id, view }
    local t0 = gettime()
    local r = client:script("admit", keys, args)
    local dt = gettime() - t0
    assert(type(r) == "table" and r[1] == "ADMITTED", "bare admit did not admit: " .. tostring(r and (r.err or r[1])))
    client:script("release", K, { id, r[2] })
    if i > warm then bare[#bare + 1] = dt end

    local fdt, stream, what = decide(ctx)
    assert((what == "body_chunk" or what == "returned") and stream.override, "decision did not admit")
    release(ctx, stream)
    if i > warm then full[#full + 1] = fdt end
  end

  local d, b = percentiles(full), percentiles(bare)
  return {
    decision = d, evalsha = b,
    ratio_p50 = d.p50_us / b.p50_us, ratio_p99 = d.p99_us / b.p99_us,
  }
end

return M
