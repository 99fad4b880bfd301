-- GET <metrics_path> (default /metrics) on the internal metrics listener: WebSocket
-- admission metrics in the Prometheus text exposition format (version 0.0.4).
--
-- Its own Lua state (a second Lua filter, on the metrics listener), so it shares
-- nothing in memory with the public filter's workers. Its sources:
--  * Redis, read at scrape time (one snapshot.lua call):
--    per-pod and per-proxy live leases, admitted/rejected/released/expired counters,
--    rate window usage. When Redis cannot be read these are OMITTED (never
--    stale values) and ws_admission_redis_up is 0.
--  * the settings (limits): always.
--  * per-worker counter files of the public filter (worker_stats.lua) under
--    WS_STATE_DIR: Redis errors, fail-open admissions, refusals while Redis was
--    unavailable, refusals from the per-worker rate-limit cache; labelled {proxy, worker}.
--
-- GET /ready (kubelet readiness/liveness probes, NLB health checks) is answered by
-- ready.lua, in this same Lua filter (one filter per listener); GET /metrics refreshes the
-- host list file too.
-- Other paths pass through untouched (e.g. /stats/prometheus is routed to the admin).
local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local hosts = require("hosts")
local worker_stats = require("worker_stats")
local runtime = require("runtime")
local admission = require("admission")
local ready = require("ready")

local S, errs = settings_loader.load(DIR .. "/settings.lua")
local resp_ok, resp = pcall(require, "resp")
local client
if S and resp_ok then
  client = resp.new(settings_loader.redis_options(S, DIR))
end
local METRICS_PATH = (S and S.metrics_path) or "/metrics"
local MAX_PODS = 10000
local probe = ready.new(S)
local function now_ms() return math.floor(runtime.now_ms()) end

local function esc(v)
  return (tostring(v):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end

local function num(v)
  v = tonumber(v) or 0
  if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

local Out = {}
Out.__index = Out
local function out() return setmetatable({ lines = {} }, Out) end
function Out:family(name, typ, help)
  self.lines[#self.lines + 1] = "# HELP " .. name .. " " .. help
  self.lines[#self.lines + 1] = "# TYPE " .. name .. " " .. typ
end
function Out:sample(name, labels, value)
  local l = ""
  if labels and #labels > 0 then
    local parts = {}
    for i = 1, #labels, 2 do parts[#parts + 1] = labels[i] .. '="' .. esc(labels[i + 1]) .. '"' end
    l = "{" .. table.concat(parts, ",") .. "}"
  end
  self.lines[#self.lines + 1] = name .. l .. " " .. num(value)
end
function Out:text() return table.concat(self.lines, "\n") .. "\n" end

-- Reads the Redis-held numbers. Returns a table, or nil + error.
local function redis_snapshot()
  if not client then return nil, "no Redis client (settings or resp.lua failed to load)" end
  local call = admission.new(S).snapshot()
  local r, serr = client:script(call.script, call.keys, call.args)
  if r == nil then return nil, serr end
  if resp.is_error(r) then return nil, r.err end
  local snap = { window_used = tonumber(r[2]) or 0, stats = {}, pods = {}, proxies = {} }
  local st = r[3] or {}
  for i = 1, #st, 2 do snap.stats[st[i]] = tonumber(st[i + 1]) or 0 end
  local pc = r[4] or {}
  -- Only ids the filter could have written (ip:port) become labels, MAX_PODS at most.
  for i = 1, #pc, 2 do
    if hosts.valid_pod(pc[i]) and #snap.pods < MAX_PODS then snap.pods[#snap.pods + 1] = { pc[i], tonumber(pc[i + 1]) or 0 } end
  end
  table.sort(snap.pods, function(a, b) return a[1] < b[1] end)
  local xc = r[5] or {}
  for i = 1, #xc, 2 do snap.proxies[#snap.proxies + 1] = { xc[i], tonumber(xc[i + 1]) or 0 } end
  table.sort(snap.proxies, function(a, b) return a[1] < b[1] end)
  return snap
end

-- After a failed read, scrapes do not ask Redis for this long: this filter runs on the
-- public listener's workers, and each attempt against a Redis that accepts but never
-- answers blocks the worker for a read timeout, and scrapes come back-to-back.
-- Meanwhile the Redis-held series are omitted, as for any failure (never stale numbers).
local REDIS_BACKOFF_MS = 2000
local redis_down_until, redis_down_why = -math.huge, nil

local function snapshot_or_backoff(h)
  local now = now_ms()
  -- (A back-off further away than its own length: the wall clock was stepped back.)
  if now < redis_down_until and redis_down_until - now <= REDIS_BACKOFF_MS then
    return nil, tostring(redis_down_why) .. " (not asked again for " .. (redis_down_until - now) .. " ms)"
  end
  local snap, err = redis_snapshot()
  if not snap then
    redis_down_until, redis_down_why = now_ms() + REDIS_BACKOFF_MS, err
    h:logWarn("ws-admission metrics: Redis unavailable: " .. tostring(err) .. "; not asked again for " .. REDIS_BACKOFF_MS .. " ms")
  end
  return snap, err
end

local function render(h)
  local o = out()
  local snap = snapshot_or_backoff(h)
  local files = worker_stats.read_all(runtime.STATE_DIR)

  o:family("ws_admission_redis_up", "gauge", "1 if this proxy could read Redis at scrape time, else 0.")
  o:sample("ws_admission_redis_up", nil, snap and 1 or 0)

  if snap then
    o:family("ws_admission_active_connections", "gauge", "Live WebSocket leases per backend pod (ip:port), all proxies.")
    for _, pc in ipairs(snap.pods) do o:sample("ws_admission_active_connections", { "pod", pc[1] }, pc[2]) end
    o:family("ws_admission_active_connections_by_proxy", "gauge", "Live WebSocket leases per Envoy proxy.")
    for _, xc in ipairs(snap.proxies) do
      o:sample("ws_admission_active_connections_by_proxy", { "proxy", xc[1] }, xc[2])
    end
    o:family("ws_admission_admitted_total", "counter", "WebSocket upgrades admitted (all proxies, kept in Redis).")
    o:sample("ws_admission_admitted_total", nil, snap.stats.admitted)
  end

  o:family("ws_admission_rejected_total", "counter",
    "Upgrades refused, by reason (with limit_all_requests, plain requests refused by the rate limit too)."
    .. " Series with only {reason} are refusals made by Redis (all proxies);"
    .. " series with {reason,proxy,worker} are refusals this proxy's workers made without Redis:"
.. " redis_unavailable, and rate_limited or capacity answered from the worker's cache of Redis's last refusal.")
  if snap then
    o:sample("ws_admission_rejected_total", { "reason", "rate_limited" }, snap.stats.rejected_rate_limited)
    o:sample("ws_admission_rejected_total", { "reason", "capacity" }, snap.stats.rejected_capacity)
  end
  for _, f in ipairs(files) do
    o:sample("ws_admission_rejected_total", { "reason", "rate_limited", "proxy", f.proxy, "worker", f.worker },
      f.counts.rate_limited_cached_total)
    o:sample("ws_admission_rejected_total", { "reason", "capacity", "proxy", f.proxy, "worker", f.worker },
      f.counts.capacity_cached_total)
    o:sample("ws_admission_rejected_total", { "reason", "redis_unavailable", "proxy", f.proxy, "worker", f.worker },
      f.counts.rejected_redis_unavailable_total)
  end

  if snap then
    o:family("ws_admission_released_total", "counter", "Leases released at the end of a connection or on a non-101 answer.")
    o:sample("ws_admission_released_total", nil, snap.stats.released)
    o:family("ws_admission_expired_total", "counter", "Leases that expired without renewal (reset streams, crashed proxies).")
    o:sample("ws_admission_expired_total", nil, snap.stats.expired)
    o:family("ws_admission_reregistered_total", "counter",
      "Leases of open connections put back after they were gone: Redis lost them (restart without persistence, failover) or they lapsed.")
    o:sample("ws_admission_reregistered_total", nil, snap.stats.reregistered)
    o:family("ws_admission_rate_window_used", "gauge", "Upgrades admitted in the current sliding rate window.")
    o:sample("ws_admission_rate_window_used", nil, snap.window_used)
  end

  if S then
    o:family("ws_admission_rate_limit", "gauge", "Configured upgrades per rate window (0 = no rate limit).")
    o:sample("ws_admission_rate_limit", nil, S.rate_limit)
    o:family("ws_admission_rate_window_seconds", "gauge", "Configured sliding rate window.")
    o:sample("ws_admission_rate_window_seconds", nil, S.rate_window_ms / 1000)
    o:family("ws_admission_max_connections_per_pod", "gauge", "Configured open WebSockets per backend pod.")
    o:sample("ws_admission_max_connections_per_pod", nil, S.max_connections_per_pod)
  end

  o:family("ws_admission_redis_errors_total", "counter", "Failed Redis calls of the public filter, per worker (kept outside Redis).")
  for _, f in ipairs(files) do
    o:sample("ws_admission_redis_errors_total", { "proxy", f.proxy, "worker", f.worker }, f.counts.redis_errors_total)
  end
  o:family("ws_admission_fail_open_total", "counter", "Upgrades routed without admission because Redis was unavailable, per worker.")
  for _, f in ipairs(files) do
    o:sample("ws_admission_fail_open_total", { "proxy", f.proxy, "worker", f.worker }, f.counts.fail_open_total)
  end
  o:family("ws_admission_one_way_streams_total", "counter",
    "Admitted upgrades whose decision fetched the host list from the admin (host list file missing or stale):"
    .. " they renew their lease on server-to-client data only, per worker.")
  for _, f in ipairs(files) do
    o:sample("ws_admission_one_way_streams_total", { "proxy", f.proxy, "worker", f.worker }, f.counts.one_way_streams_total)
  end
  o:family("ws_admission_phantom_leases_released_total", "counter",
    "Leases Redis granted to an admission whose answer never reached the proxy (a timed-out call), released by the"
    .. " worker's next good Redis call, per worker.")
  for _, f in ipairs(files) do
    o:sample("ws_admission_phantom_leases_released_total", { "proxy", f.proxy, "worker", f.worker },
      f.counts.phantom_leases_released_total)
  end
  return o:text()
end

local logged = false

function envoy_on_request(h)
  local hdrs = h:headers()
  local p = (hdrs:get(":path") or ""):gsub("%?.*$", "")
  local m = hdrs:get(":method")
  if p == ready.PATH and p ~= METRICS_PATH then
    -- Other methods go on to the route (admin /ready), as before this filter answered.
    if m == "GET" or m == "HEAD" then return probe.respond(h, m == "HEAD") end
    return
  end
  if p ~= METRICS_PATH then return end
  if m ~= "GET" and m ~= "HEAD" then
    return h:respond({ [":status"] = "405", ["allow"] = "GET, HEAD" }, "")
  end
  if not S and not logged then
    logged = true
    for _, e in ipairs(errs or {}) do h:logErr("ws-admission metrics: " .. e) end
  end
  local body = render(h)
  probe.refresh_hosts(h)
  h:respond({ [":status"] = "200", ["content-type"] = "text/plain; version=0.0.4; charset=utf-8" },
    m == "HEAD" and "" or body)
end
