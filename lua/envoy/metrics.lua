-- GET <metrics_path> (default /metrics) on the internal metrics listener: WebSocket
-- admission metrics in the Prometheus text exposition format (version 0.0.4).
--
-- Its own Lua state (a second Lua filter, on the metrics listener), so it shares
-- nothing in memory with the public filter's workers. It never calls Redis: a scrape
-- costs Redis nothing whatever the scrape rate. Its sources:
--  * the metrics snapshot file the agent writes every metrics_snapshot_ms from one
--    ws_snapshot call (snapshot_file.lua): per-pod and per-proxy live leases, the
--    counters kept in Redis, the rate window usage, the fleet's gauges. When the agent
--    could not read Redis, or its file is stale, these are OMITTED (never stale values)
--    and ws_admission_redis_up is 0;
--  * the settings (limits): always;
--  * per-worker counter files of the public filter (worker_stats.lua) under
--    WS_STATE_DIR: Redis errors, fail-open admissions, refusals the workers made
--    themselves; labelled {proxy, worker}.
--
-- GET /ready and /live (probes, NLB health checks) are answered by ready.lua, in this
-- same Lua filter (one filter per listener). Other paths pass through untouched (e.g.
-- /stats/prometheus is routed to the admin).
local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local worker_stats = require("worker_stats")
local runtime = require("runtime")
local snapshot_file = require("snapshot_file")
local ready = require("ready")

local S, errs = settings_loader.load(DIR .. "/settings.lua")
local METRICS_PATH = (S and S.metrics_path) or "/metrics"
local probe = ready.new(S)
local function now_ms() return math.floor(runtime.now_ms()) end
-- A snapshot older than this is not served (three snapshots missed, and some slack).
local MAX_SNAPSHOT_AGE_MS = 3 * ((S and S.metrics_snapshot_ms) or 5000) + 2000

local function esc(v)
  return (tostring(v):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end

local function num(v)
  v = tonumber(v) or 0
  if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%d", v) end
  return string.format("%.15g", v)
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

local logged_why
local function snapshot(h)
  local snap, why = snapshot_file.read(runtime.path("snapshot"), now_ms(), MAX_SNAPSHOT_AGE_MS)
  if not snap and why ~= logged_why then h:logWarn("ws-admission metrics: Redis-held metrics omitted: " .. tostring(why)) end
  logged_why = why
  return snap
end

-- The numbers kept in Redis, all proxies (the agent's snapshot).
local function redis_held(o, snap)
  o:family("ws_admission_active_connections", "gauge", "Live WebSocket leases per backend pod (ip:port), all proxies.")
  for _, pc in ipairs(snap.pods) do o:sample("ws_admission_active_connections", { "pod", pc[1] }, pc[2]) end
  o:family("ws_admission_active_connections_by_proxy", "gauge", "Live WebSocket leases per Envoy proxy.")
  for _, xc in ipairs(snap.proxies) do
    o:sample("ws_admission_active_connections_by_proxy", { "proxy", xc[1] }, xc[2])
  end
  o:family("ws_admission_admitted_total", "counter", "WebSocket upgrades admitted (all proxies, kept in Redis).")
  o:sample("ws_admission_admitted_total", nil, snap.stats.admitted)
end

local COUNTERS = {
  { "released", "Leases released at the end of a connection or on a non-101 answer." },
  { "expired", "Leases that expired without renewal (reset streams, crashed proxies)." },
  { "reregistered", "Leases of open connections put back after they were gone: Redis lost them (restart without"
    .. " persistence, failover) or they lapsed." },
  { "failed_upstream", "Admitted upgrades that never reached their backend (Envoy answered itself: the pod was gone or"
    .. " refused the connection); their rate window entry was given back and the pod passed over for a while." },
}
local GAUGES = {
  { "pods_reachable", "Backend pods that at least one proxy reports healthy." },
  { "pods_penalised", "Backend pods passed over after an upgrade to them failed (for penalty_ms)." },
  { "proxies_live", "Proxies whose agent beat in the last 30 s." },
  { "recovering", "1 while Redis waits for every proxy to put its streams back after a state loss (nothing is admitted), else 0." },
  { "clients_tracked", "Clients holding at least one open WebSocket (the per-client limits' state)." },
}

local function redis_held_rest(o, snap)
  for _, c in ipairs(COUNTERS) do
    o:family("ws_admission_" .. c[1] .. "_total", "counter", c[2])
    o:sample("ws_admission_" .. c[1] .. "_total", nil, snap.stats[c[1]])
  end
  o:family("ws_admission_rate_window_used", "gauge", "Upgrades admitted in the current sliding rate window.")
  o:sample("ws_admission_rate_window_used", nil, snap.window_used)
  for _, g in ipairs(GAUGES) do
    o:family("ws_admission_" .. g[1], "gauge", g[2])
    o:sample("ws_admission_" .. g[1], nil, snap.gauges[g[1]])
  end
  o:family("ws_admission_snapshot_age_seconds", "gauge", "Age of the Redis-held numbers above (the agent's last snapshot).")
  o:sample("ws_admission_snapshot_age_seconds", nil, math.max(0, now_ms() - snap.written_ms) / 1000)
end

local function rejected(o, snap, files)
  o:family("ws_admission_rejected_total", "counter",
    "Upgrades refused, by reason (with limit_all_requests, plain requests refused by the rate limit too)."
    .. " Series with only {reason} are refusals made by Redis (all proxies): rate_limited, capacity, client;"
    .. " series with {reason,proxy,worker} are refusals this proxy's workers made themselves:"
    .. " redis_unavailable, recovering and no_backend, and rate_limited or capacity answered from the worker's cache"
    .. " of Redis's last refusal.")
  if snap then
    o:sample("ws_admission_rejected_total", { "reason", "rate_limited" }, snap.stats.rejected_rate_limited)
    o:sample("ws_admission_rejected_total", { "reason", "capacity" }, snap.stats.rejected_capacity)
    o:sample("ws_admission_rejected_total", { "reason", "client" }, snap.stats.rejected_client)
  end
  for _, f in ipairs(files) do
    local function worker_sample(reason, count)
      o:sample("ws_admission_rejected_total", { "reason", reason, "proxy", f.proxy, "worker", f.worker }, count)
    end
    worker_sample("rate_limited", f.counts.rate_limited_cached_total)
    worker_sample("capacity", f.counts.capacity_cached_total)
    worker_sample("redis_unavailable", f.counts.rejected_redis_unavailable_total)
    worker_sample("recovering", f.counts.rejected_recovering_total)
    worker_sample("no_backend", f.counts.rejected_no_backend_total)
  end
end

local CONFIGURED = {
  { "rate_limit", "Configured upgrades per rate window (0 = no rate limit)." },
  { "rate_window_seconds", "Configured sliding rate window.", function() return S.rate_window_ms / 1000 end },
  { "max_connections_per_pod", "Configured open WebSockets per backend pod." },
  { "max_connections_per_client", "Configured open WebSockets per client (0 = no fixed cap)." },
  { "max_connections_per_client_percent", "Configured largest share of a proxy's slots per client, percent (0 = off)." },
  { "rate_limit_per_client", "Configured upgrades per client per rate window (0 = off)." },
}

local function configured(o)
  for _, c in ipairs(CONFIGURED) do
    o:family("ws_admission_" .. c[1], "gauge", c[2])
    o:sample("ws_admission_" .. c[1], nil, c[3] and c[3]() or S[c[1]])
  end
end

local function per_worker(o, files)
  o:family("ws_admission_redis_errors_total", "counter", "Failed Redis calls of the public filter, per worker (kept outside Redis).")
  for _, f in ipairs(files) do
    o:sample("ws_admission_redis_errors_total", { "proxy", f.proxy, "worker", f.worker }, f.counts.redis_errors_total)
  end
  o:family("ws_admission_fail_open_total", "counter", "Upgrades routed without admission because Redis was unavailable, per worker.")
  for _, f in ipairs(files) do
    o:sample("ws_admission_fail_open_total", { "proxy", f.proxy, "worker", f.worker }, f.counts.fail_open_total)
  end
end

local function render(h)
  local o = out()
  local snap = snapshot(h)
  local files = worker_stats.read_all(runtime.STATE_DIR)
  o:family("ws_admission_redis_up", "gauge", "1 if this proxy's agent read Redis in its last snapshot (every few seconds), else 0.")
  o:sample("ws_admission_redis_up", nil, snap and 1 or 0)
  if snap then redis_held(o, snap) end
  rejected(o, snap, files)
  if snap then redis_held_rest(o, snap) end
  if S then configured(o) end
  per_worker(o, files)
  return o:text()
end

local logged = false

function envoy_on_request(h)
  local hdrs = h:headers()
  local p = (hdrs:get(":path") or ""):gsub("%?.*$", "")
  local m = hdrs:get(":method")
  if (p == ready.PATH or p == ready.LIVE_PATH) and p ~= METRICS_PATH then
    -- Other methods go on to the route (admin /ready), as before this filter answered.
    if m == "GET" or m == "HEAD" then return probe.respond(h, m == "HEAD", p == ready.LIVE_PATH) end
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
  h:respond({ [":status"] = "200", ["content-type"] = "text/plain; version=0.0.4; charset=utf-8" },
    m == "HEAD" and "" or body)
end
