-- WebSocket admission: the HTTP Lua filter of the public listener.
--
-- Behaviour, responses, failure modes and the Envoy API facts this file relies on:
-- docs/filter.md. Redis side: lua/redis/ (admit, release, renew, reregister).
--
-- Envoy runs one copy of this file per worker thread (one Lua state each), so every
-- `local` below is per worker: the Redis connection, the host cache, the
-- "rate limited until" cache and the table of live connections.
-- https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/lua_filter
-- ("All Lua environments are per worker thread").

local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local hosts = require("hosts")
local worker_stats = require("worker_stats")
local ws_frames = require("ws_frames")
local keys = require("keys")

-- Dynamic metadata namespace for {connection_id, pod, lease}: visible to access logs as
-- %DYNAMIC_METADATA(ws.admission:pod)% and to envoy_on_response of the same stream.
-- `lease` is "held" from the admission until the filter releases the lease itself
-- ("released"): the lease log (envoy/bootstrap.ts, lease_log.lua) writes a line for
-- every stream that ends while it is still "held", resets included, and that line
-- releases it.
local NS = "ws.admission"
local LEASE_HELD, LEASE_RELEASED = "held", "released"
local ADMIN_TIMEOUT_MS = 250   -- httpCall to the loopback admin
local REDIS_BACKOFF_MS = 500   -- after a Redis failure, skip Redis this long (fail per mode)
local LOG_EVERY_MS = 1000      -- at most one warning of a kind per worker per second
local FULL_RETRY_MAX_MS = 5000 -- Retry-After of a 503 "capacity", at most
-- How long the worker remembers a one-way stream (see envoy_on_request) without seeing
-- its data. Its client may keep it open while talking (unseen) for any time; when its
-- server speaks again, the lease (lapsed by then) must still be re-registered.
local ONE_WAY_KEEP_MS = 3600 * 1000
-- The host list file written by metrics.lua (hosts.lua, "The host list file") is used
-- while younger than max(HOSTS_FILE_MIN_AGE_MS, 3 x hosts_cache_ms): the kubelet probes
-- GET /ready every 5 s (readiness; liveness every 10 s), so a fresh file is at most ~5 s
-- old and this bound tolerates one missed probe. Older (or missing) -> admin httpCall.
local HOSTS_FILE_MIN_AGE_MS = 10000
-- A file stamped this far in the future is stale too (the wall clock was stepped back).
local HOSTS_FILE_FUTURE_MS = 1000

-------------------------------------------------------------------------------
-- Load time (once per worker): settings, identity, modules.
-------------------------------------------------------------------------------

local load_errors = {}
local S, errs, partial = settings_loader.load(DIR .. "/settings.lua")
if not S then
  for _, e in ipairs(errs) do load_errors[#load_errors + 1] = e end
end
-- When settings are refused we still honour a valid failure_mode (default: open).
local FAILURE_MODE = (S and S.failure_mode)
  or (partial and (partial.failure_mode == "closed" or partial.failure_mode == "open") and partial.failure_mode)
  or "open"

local socket_ok, socket = pcall(require, "socket")
local resp_ok, resp = pcall(require, "resp")
if not socket_ok then load_errors[#load_errors + 1] = "luasocket is not available: " .. tostring(socket) end
if not resp_ok then load_errors[#load_errors + 1] = "resp.lua failed to load: " .. tostring(resp) end

local function now_ms()
  if socket_ok then return socket.gettime() * 1000 end
  return os.time() * 1000
end

local function random_bytes(n)
  local f = io.open("/dev/urandom", "rb")
  if not f then return nil end
  local b = f:read(n)
  f:close()
  return b
end

local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

do
  local seed = random_bytes(4)
  local n = now_ms()
  if seed then n = n + seed:byte(1) * 16777216 + seed:byte(2) * 65536 + seed:byte(3) * 256 + seed:byte(4) end
  math.randomseed(n % 2147483647)
end

-- Proxy id: POD_NAME, else the host name, as a DNS-1123-like name (settings_loader).
local PROXY = settings_loader.proxy_id(socket_ok and socket.dns.gethostname or nil)
-- Worker token: Envoy does not tell a Lua state which worker it runs on, so each
-- worker names itself with 6 random hex digits at load time (docs/filter.md).
local WORKER = hex(random_bytes(3) or string.char(math.random(0, 255), math.random(0, 255), math.random(0, 255)))
local STATE_DIR = os.getenv("WS_STATE_DIR") or "/var/run/ws-admission"
local stats = worker_stats.writer(STATE_DIR, PROXY, WORKER, now_ms, 1000)
local HOSTS_FILE = STATE_DIR .. "/hosts"
-- Written by drain.lua (the preStop hook) before it releases this proxy's leases, with
-- the time it did (ms): a connection that renews after that must not re-register, or
-- it would hold its slot for a whole lease TTL after the SIGTERM that resets it. The
-- marker counts only if it was written after this worker loaded (one left by an earlier
-- container of the pod, e.g. after a liveness restart, is not about this process) and
-- within DRAIN_MARKER_MS (SIGTERM follows a drain within seconds; a drain run by hand
-- on a serving pod stops re-registration for no longer than that). Read only when a
-- renewal finds its lease gone.
local DRAIN_MARKER = STATE_DIR .. "/draining"
local DRAIN_MARKER_MS = tonumber(os.getenv("WS_DRAIN_MARKER_MS") or "") or 120000 -- (the tests shorten it)
local LOADED_MS = now_ms()
local function draining()
  local f = io.open(DRAIN_MARKER, "rb")
  if not f then return false end
  local at = tonumber((f:read(32) or ""):match("^(%d+)\n"))
  f:close()
  local now = now_ms()
  return at ~= nil and at >= LOADED_MS and at <= now and now - at < DRAIN_MARKER_MS
end

local K_RATE, K_RATE_REQUESTS, K_STATS, K_LEASES, K_LOAD, K_VIEWS, K_HOSTS, K_CONN
local client
if S then
  local K = keys.new(S.hash_tag)
  -- Plain requests (limit_all_requests) have a window of their own: GETs must not spend
  -- the WebSocket upgrades' budget.
  K_RATE, K_RATE_REQUESTS, K_STATS, K_CONN = K.rate, K.rate_requests, K.stats, K.conn
  K_LEASES, K_LOAD, K_VIEWS, K_HOSTS = K.leases, K.load, K.views, K.hosts
  if resp_ok and socket_ok then
    client = resp.new(settings_loader.redis_options(S, DIR))
  end
end
local READY = S ~= nil and client ~= nil and #load_errors == 0

-------------------------------------------------------------------------------
-- Per-worker state.
-------------------------------------------------------------------------------

local redis_down_until = 0   -- skip Redis until then (after a failure)
local rate_limited_until = 0 -- refuse upgrades without Redis until then
local requests_limited_until = 0 -- the same for plain requests (their own window)
-- After a FULL: refuse upgrades to the same candidate list without Redis until
-- full_until (capacity_cache_ms at most); full_retry_at is Redis's "first slot frees".
local full = { until_ms = 0, retry_at = 0, pods = nil }
local host_cache = { list = nil, at = -math.huge, file_ok = nil }
local conn_counter = 0
local live = {}              -- connection id -> { pod, last_renew, last_seen, connect }
local live_count = 0
local admissions_since_sweep = 0
local last_log = {}

local function log_limited(h, kind, level, msg)
  local now = now_ms()
  if (last_log[kind] or -math.huge) + LOG_EVERY_MS > now then return end
  last_log[kind] = now
  if level == "err" then h:logErr(msg) elseif level == "warn" then h:logWarn(msg) else h:logInfo(msg) end
end

local function new_conn_id()
  conn_counter = conn_counter + 1
  return PROXY .. "|" .. WORKER .. "|" .. conn_counter .. "|" .. string.format("%06x", math.random(0, 0xffffff))
end

-------------------------------------------------------------------------------
-- Request inspection.
-------------------------------------------------------------------------------

-- True when a comma-separated header value has `token` (lower-case) as one element,
-- blanks around it aside. Linear in the value and at C speed for any value: one lower(),
-- then a plain find() of the token, and at each place it is found a look at the blanks
-- around it, which are never looked at twice. (Splitting on "," and trimming each part
-- cost ~9 ms of worker time for a Connection header of ", " repeated; the usual "(.-)"
-- trim even backtracks quadratically on a long run of blanks.) No length cap: a value
-- this filter refused to read, Envoy would still upgrade.
local BLANK = { [9] = true, [32] = true }
local COMMA = 44
local function has_token(value, token)
  if not value then return false end
  local v = value:lower()
  local n = #v
  local at = 1
  while true do
    local s, e = v:find(token, at, true)
    if not s then return false end
    local i = s - 1
    while i >= 1 and BLANK[v:byte(i)] do i = i - 1 end
    local j = e + 1
    while j <= n and BLANK[v:byte(j)] do j = j + 1 end
    if (i < 1 or v:byte(i) == COMMA) and (j > n or v:byte(j) == COMMA) then return true end
    at = s + 1
  end
end

-- A WebSocket upgrade as Envoy's HTTP connection manager sees one: HTTP/1.1
-- `Connection: upgrade` + `Upgrade: websocket` (tokens, any case), or an HTTP/2
-- extended CONNECT with `:protocol websocket` (RFC 8441) -- which Envoy's HTTP/2 codec
-- normally rewrites into the HTTP/1.1 form before the filters, its 200 seen as 101
-- (docs/filter.md); the raw form is kept as a fallback. `Upgrade: websocket`
-- without the Connection token is not an upgrade for Envoy either: passed through.
local function websocket_kind(hdrs)
  if has_token(hdrs:get("connection"), "upgrade") and has_token(hdrs:get("upgrade"), "websocket") then
    return "h1"
  end
  if hdrs:get(":method") == "CONNECT" and (hdrs:get(":protocol") or ""):lower() == "websocket" then
    return "h2"
  end
  return nil
end

-- Headers no client may send: our own namespace, and the one header that can pick
-- an upstream host by itself (original destination clusters).
local function strip_internal(hdrs)
  local drop
  for k, _ in pairs(hdrs) do
    local lk = k:lower()
    if lk:sub(1, 5) == "x-ws-" or lk == "x-envoy-original-dst-host" then
      drop = drop or {}
      drop[#drop + 1] = k
    end
  end
  -- Removal only after the iteration completed (the Lua filter forbids modifying
  -- headers during pairs(), see the header object's __pairs() in the Envoy docs).
  if drop then
    for _, k in ipairs(drop) do hdrs:remove(k) end
  end
end

-------------------------------------------------------------------------------
-- Candidates: healthy hosts of the backend cluster, from the admin host list.
-------------------------------------------------------------------------------

-- The host list file (written by metrics.lua on every /ready probe): list and nil when it
-- is usable, else nil and why not. A small local read: no network, no yield.
local function hosts_from_file(h, now)
  local list, written_ms, rejected = hosts.read_file(HOSTS_FILE, S.backend_cluster)
  if not list then return nil, written_ms end
  local age = now - written_ms
  local max_age = math.max(HOSTS_FILE_MIN_AGE_MS, 3 * S.hosts_cache_ms)
  if age > max_age or age < -HOSTS_FILE_FUTURE_MS then
    return nil, string.format("stale (written %d ms ago, limit %d ms)", age, max_age)
  end
  if rejected > 0 then
    log_limited(h, "bad_host_file", "warn", "ws-admission: ignored " .. rejected .. " line(s) of "
      .. HOSTS_FILE .. " that are not a valid host")
  end
  return list
end

-- Returns the list, and true when this call went to the admin (the script yielded in
-- httpCall(); see envoy_on_request for why that matters).
--
-- Steady state: the per-worker cache, refreshed every hosts_cache_ms from the host list
-- file that metrics.lua keeps fresh; no httpCall, so the upgrade stays two-way. Only
-- when the file is missing or stale does the worker fetch the list itself (the stream
-- becomes one-way, counted in one_way_streams_total).
-- `old` when `new` holds the same pods in the same order, else `new`: an unchanged list
-- keeps its identity, and with it its view id (view_of) and the capacity cache.
local function same_or(old, new)
  if not old or #old ~= #new then return new end
  for i = 1, #new do
    if old[i] ~= new[i] then return new end
  end
  return old
end

local function candidates(h)
  local now = now_ms()
  if host_cache.list and now - host_cache.at < S.hosts_cache_ms then return host_cache.list, false end
  local flist, why = hosts_from_file(h, now)
  if flist then
    if host_cache.file_ok == false then
      h:logInfo("ws-admission: host list file " .. HOSTS_FILE .. " is fresh again; no more admin calls on the request path")
    end
    host_cache.file_ok = true
    host_cache.list, host_cache.at = same_or(host_cache.list, flist), now
    return host_cache.list, false
  end
  if host_cache.file_ok ~= false then
    -- Logged once per change. Missing is normal until the first probe reached metrics.lua
    -- (and without probes, e.g. outside Kubernetes, it never comes): info, not a warning.
    local msg = "ws-admission: host list file " .. HOSTS_FILE .. " unusable (" .. tostring(why)
      .. "); fetching the host list from the admin on the request path (those upgrades are one-way)"
    if why == "missing" then h:logInfo(msg) else h:logWarn(msg) end
  end
  host_cache.file_ok = false
  -- One fetch at a time per worker: while one stream waits in httpCall(), Envoy runs the
  -- worker's other streams; those use the previous list rather than fetching (and
  -- yielding, which would make them one-way) too. A fetch whose stream was reset never
  -- resumes, so "in flight" ends after the admin timeout regardless.
  -- Before the worker's first list there is nothing to use meanwhile: those upgrades are
  -- refused (503 no_backend, Retry-After 1) rather than each fetching too (at a cold start
  -- without a file, 50 concurrent upgrades made 50 admin calls and 50 one-way streams).
  if host_cache.fetching_since and now - host_cache.fetching_since < ADMIN_TIMEOUT_MS + 50 then
    if host_cache.list then return host_cache.list, false end
    return {}, false, "loading"
  end
  host_cache.fetching_since = now
  local ok, rh, body = pcall(h.httpCall, h, S.admin_cluster, {
    [":method"] = "GET", [":path"] = "/clusters", [":authority"] = S.admin_cluster,
  }, nil, ADMIN_TIMEOUT_MS)
  host_cache.fetching_since = nil
  now = now_ms()
  if ok and rh and rh[":status"] == "200" and body then
    local list, rejected = hosts.parse_clusters(body, S.backend_cluster)
    if rejected > 0 then
      log_limited(h, "bad_host", "warn", "ws-admission: ignored " .. rejected .. " host(s) of cluster "
        .. S.backend_cluster .. " that are not ip:port")
    end
    host_cache.list, host_cache.at = same_or(host_cache.list, list), now
    return host_cache.list, true
  end
  log_limited(h, "admin", "warn", "ws-admission: admin host list unavailable ("
    .. (ok and tostring(rh and rh[":status"]) or tostring(rh)) .. "); using the cached list")
  -- Keep serving the last good list; retry on the next request after a short pause.
  if host_cache.list then host_cache.at = now - S.hosts_cache_ms + 200 end
  return host_cache.list or {}, true
end

-- The host view of a list (keys.view_id): Redis knows a worker's healthy hosts by this
-- id (register_view.lua), so admit.lua is sent 16 hex digits instead of the list.
local view = { list = nil, id = nil, set = nil }
local function view_of(list)
  if view.list ~= list then
    local set = {}
    for i = 1, #list do set[list[i]] = true end
    view.list, view.id, view.set = list, keys.view_id(list), set
  end
  return view
end

-------------------------------------------------------------------------------
-- Redis calls.
-------------------------------------------------------------------------------

local function redis_failed(h, what, err)
  stats:inc("redis_errors_total", 1, true)
  redis_down_until = now_ms() + REDIS_BACKOFF_MS
  log_limited(h, "redis", "warn", "ws-admission: redis " .. what .. " failed: " .. tostring(err))
end

-- Admissions whose answer never came (a read timeout, a dropped connection): Redis may
-- have run them after the filter gave up, leaving a lease no stream stands behind (a
-- phantom) on a pod the filter never learnt. Each entry: { id, at }. The next round trip that works first gives those
-- leases back (settle: release_proxy.lua limited to these ids), so a phantom lives until
-- this worker's next good Redis call, and never longer than the lease TTL
-- (docs/filter.md, "Failure modes"). A fail-open upgrade tracked under such an id loses
-- its lease too, if Redis had granted one: its next renewal re-registers it.
local unsettled = {}
local UNSETTLED_MAX = 256      -- older ones are dropped: their leases expire by TTL
local SETTLE_MAX_STEPS = 1000  -- scan steps (1000 leases each) per settle, at most

local function remember_unsettled(id, now)
  if #unsettled >= UNSETTLED_MAX then table.remove(unsettled, 1) end
  unsettled[#unsettled + 1] = { id = id, at = now }
end

-- Gives back the leases of unanswered admissions. Returns false when it failed (the
-- entries stay for the next time).
local function settle(h)
  local now = now_ms()
  local args = { PROXY, "0" }
  for i = 1, #unsettled do
    if now - unsettled[i].at < S.lease_ttl_ms then args[#args + 1] = unsettled[i].id end
  end
  local taken = #unsettled
  local removed, steps = 0, 0
  if #args > 2 then
    repeat
      local replies, err = client:run({ { script = "release_proxy", keys = { K_LEASES, K_LOAD, K_STATS }, args = args } })
      if not replies then
        redis_failed(h, "release of unanswered admissions", err)
        return false
      end
      local r = replies[1]
      if resp.is_error(r) or type(r) ~= "table" then
        -- An error reply would come again on a retry: logged, and the entries dropped.
        log_limited(h, "settle", "warn", "ws-admission: release of unanswered admissions failed: "
          .. tostring(resp.is_error(r) and r.err or r))
        break
      end
      removed = removed + (tonumber(r[2]) or 0)
      args[2] = tostring(r[1])
      steps = steps + 1
    until args[2] == "0" or steps >= SETTLE_MAX_STEPS
  end
  for _ = 1, taken do table.remove(unsettled, 1) end
  if removed > 0 then
    stats:inc("phantom_leases_released_total", removed, true)
    log_limited(h, "phantom", "info", "ws-admission: released " .. removed .. " lease(s) that Redis granted to "
      .. "admission(s) whose answer timed out")
  end
  return true
end

-- Runs script entries; returns replies, or nil after counting and logging a failure.
-- A Redis error reply to one of our scripts counts as a failure too. On a transport
-- failure the second value is true: the entries may have run (unanswered).
local function run(h, what, entries)
  if now_ms() < redis_down_until then return nil end
  if #unsettled > 0 and not settle(h) then return nil end
  local replies, err = client:run(entries)
  if not replies then
    redis_failed(h, what, err)
    return nil, true
  end
  for i = 1, #replies do
    if resp.is_error(replies[i]) then
      redis_failed(h, what, replies[i].err)
      return nil
    end
  end
  return replies
end

-- The reregister.lua call that puts back the lease of live connection `id`.
local function reregister_entry(id, c)
  return { script = "reregister", keys = { K_LEASES, K_LOAD, K_STATS }, args = { id, c.pod, S.lease_ttl_ms } }
end

local function reregister(h, id, c)
  if draining() then
    log_limited(h, "drain", "info", "ws-admission: lease of " .. id .. " on " .. c.pod
      .. " is gone and this proxy is draining; not re-registered")
    return
  end
  local r = run(h, "reregister", { reregister_entry(id, c) })
  if r then
    log_limited(h, "rereg", "info", "ws-admission: lease of " .. id .. " on " .. c.pod
      .. " was gone (expired or Redis lost state); re-registered, pod now has " .. tostring(r[1]))
  end
end

-------------------------------------------------------------------------------
-- The state epoch: a random id in the stats hash (field epoch:id), set by the first
-- worker that finds none. Redis losing its state (a restart without persistence, a
-- failover to an empty replica) loses it too; a worker that then finds another id
-- re-registers every open connection it has at once, before it admits anything (admit
-- refuses to decide for a caller with another epoch: 'EPOCH').
-------------------------------------------------------------------------------

local EPOCH_FIELD = "epoch:id"
local epoch = nil           -- the epoch this worker's connections are registered in
local REREGISTER_BATCH = 500 -- re-registrations per round trip

local function reregister_all(h)
  if draining() then return true end
  local now = now_ms()
  local entries, done = {}, 0
  local function flush()
    if #entries == 0 then return true end
    if not run(h, "reregister", entries) then return false end
    done = done + #entries
    entries = {}
    return true
  end
  for id, c in pairs(live) do
    entries[#entries + 1] = reregister_entry(id, c)
    c.last_renew = now
    if #entries >= REREGISTER_BATCH and not flush() then return false end
  end
  if not flush() then return false end
  h:logInfo("ws-admission: Redis has another state epoch (it lost its state); re-registered " .. done
    .. " open connection(s) of this worker")
  return true
end

-- Makes sure this worker's open connections are registered in Redis's current state.
-- Returns the current epoch, or nil after a failure (counted and logged by run).
local function sync_epoch(h)
  local r = run(h, "epoch", {
    { "HSETNX", K_STATS, EPOCH_FIELD, hex(random_bytes(8) or tostring(math.random(0, 0x7fffffff))) },
    { "HGET", K_STATS, EPOCH_FIELD },
  })
  local cur = r and r[2]
  if type(cur) ~= "string" then return nil end
  -- A first epoch with connections already open: tracked while Redis was unreachable.
  if (epoch ~= nil and cur ~= epoch) or (epoch == nil and live_count > 0) then
    if not reregister_all(h) then return nil end
  end
  epoch = cur
  return cur
end

-- Renews the lease of a live connection when renew_interval_ms has passed since the
-- last renewal; called on data in either direction.
local function touch(h, id)
  local c = live[id]
  if not c then return end
  local now = now_ms()
  c.last_seen = now
  if now - c.last_renew < S.renew_interval_ms then return end
  c.last_renew = now
  local entries = { { script = "renew", keys = { K_LEASES }, args = { id, c.pod, S.lease_ttl_ms } } }
  if S.connection_inventory then
    entries[2] = { "PEXPIRE", K_CONN .. id, S.lease_ttl_ms }
  end
  local r = run(h, "renew", entries)
  if r and r[1] == 0 then
    -- Gone: lapsed, or Redis lost everything (then every connection of this worker is).
    local before = epoch
    local cur = sync_epoch(h)
    if cur and cur == before and live[id] then reregister(h, id, c) end
  end
  stats:maybe_flush()
end

local function release(h, id)
  local c = live[id]
  if not c then return end
  live[id] = nil
  live_count = live_count - 1
  full.until_ms = 0 -- this worker just freed a slot
  local entries = { { script = "release", keys = { K_LEASES, K_LOAD, K_STATS }, args = { id, c.pod } } }
  if S.connection_inventory then entries[2] = { "DEL", K_CONN .. id } end
  -- Released: no lease log line for this stream (its access log filter wants "held").
  -- Not released (Redis failed, or is being skipped after a failure): the metadata stays
  -- "held", so the lease log line written when the stream ends retries the release.
  if run(h, "release", entries) then
    h:streamInfo():dynamicMetadata():set(NS, "lease", LEASE_RELEASED)
  end
  stats:maybe_flush()
end

-- Data of an upgraded stream in one direction ("up": client -> server, "down": back):
-- renews the lease, and releases it when the backend's Close frame passes. That frame
-- is the backend's last word on the connection (RFC 6455 5.5.1: no data after a Close):
-- either its answer to the client's Close, which completes the close handshake, or the
-- start of a handshake of its own. Either way the pod's slot is free from then on. Only
-- the backend's direction is scanned, so one-way streams (which never see the client's
-- bytes) release the same way, and a client cannot end a lease by what it sends.
local function on_data(h, id, dir, chunk)
  local c = live[id]
  if not c then return end
  touch(h, id)
  if dir == "down" and c.backend_frames:feed(chunk) then release(h, id) end
end

-- Drops local entries of streams that were reset (no envoy_on_response end ever
-- came); their leases have expired in Redis by now. A two-way stream that is open has
-- carried data within the idle timeout (< lease TTL); a one-way stream may be open and
-- busy in the direction we cannot see, so it is kept much longer.
local function sweep()
  local now = now_ms()
  local cutoff, one_way_cutoff = now - 2 * S.lease_ttl_ms, now - math.max(ONE_WAY_KEEP_MS, 2 * S.lease_ttl_ms)
  for id, c in pairs(live) do
    if c.last_seen < (c.one_way and one_way_cutoff or cutoff) then
      live[id] = nil
      live_count = live_count - 1
    end
  end
end

-------------------------------------------------------------------------------
-- Responses.
-------------------------------------------------------------------------------

local function seconds(ms) return tostring(math.max(1, math.ceil(ms / 1000))) end

local function refuse_rate_limited(h, retry_ms)
  local s = seconds(retry_ms)
  h:respond({
    [":status"] = "429", ["retry-after"] = s, ["ratelimit-limit"] = tostring(S.rate_limit),
    ["ratelimit-remaining"] = "0", ["ratelimit-reset"] = s,
    ["content-type"] = "text/plain", ["x-ws-admission"] = "rate_limited",
  }, "too many WebSocket upgrades, retry later\n")
end

local function refuse_unavailable(h, reason, retry_ms, body)
  h:respond({
    [":status"] = "503", ["retry-after"] = seconds(retry_ms),
    ["content-type"] = "text/plain", ["x-ws-admission"] = reason,
  }, body)
end

local function refuse_full(h, retry_ms)
  refuse_unavailable(h, "capacity", retry_ms, "all backends are at their connection limit, retry later\n")
end

-- Redis unavailable (or the filter unusable): route normally, or refuse, by config.
local function fail(h, is_upgrade)
  if FAILURE_MODE == "closed" then
    stats:inc("rejected_redis_unavailable_total", 1, true)
    refuse_unavailable(h, "redis_unavailable", 1000, "admission control unavailable, retry later\n")
  else
    if is_upgrade then stats:inc("fail_open_total", 1, true) end
  end
end

-- An upgrade on its way to `pod`: pin it, track it (renewals, release on the backend's
-- Close, the lease log at its end) and watch its client -> server data.
-- `registered`: Redis holds its lease (admitted); false for a fail-open upgrade.
local function track(h, id, pod, kind, yielded, now, registered)
  -- https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/lua_filter
  -- setUpstreamOverrideHost(host, strict): strict => Envoy answers 503 itself if the
  -- host is gone; envoy_on_response then sees a non-101 status and releases.
  h:setUpstreamOverrideHost(pod, true)
  -- Not registered (fail open): no lease yet, so the first renewal finds none and
  -- re-registers it once Redis answers again.
  local c = { pod = pod, last_renew = registered and now or -math.huge, last_seen = now, kind = kind, one_way = yielded,
    backend_frames = ws_frames.scanner() }
  if yielded then stats:inc("one_way_streams_total") end
  live[id] = c
  live_count = live_count + 1
  h:streamInfo():dynamicMetadata():set(NS, "connection_id", id)
  h:streamInfo():dynamicMetadata():set(NS, "pod", pod)
  h:streamInfo():dynamicMetadata():set(NS, "lease", LEASE_HELD)
  admissions_since_sweep = admissions_since_sweep + 1
  if admissions_since_sweep >= 256 then
    admissions_since_sweep = 0
    sweep()
  end
  stats:maybe_flush()
  if yielded then
    -- This stream waited in httpCall() (host list refresh). Envoy passes the request
    -- headers on after an httpCall() only when the script then returns: the resumed
    -- coroutine is checked for state Running, and waiting for a body chunk is not
    -- (lua_filter.cc, StreamHandleWrapper::onSuccess -> continueIteration()). Iterating
    -- bodyChunks() here would hold the upgrade until the client sends data, which a
    -- WebSocket client never does before its 101. So this stream renews on
    -- server -> client data only (docs/filter.md, "one-way streams").
    return
  end
  -- Client -> server data of the upgraded stream arrives as request body chunks:
  -- renew on it too. Headers were passed on when the coroutine first waited for a
  -- chunk (StreamHandleWrapper::start answers Continue for WaitForBodyChunk).
  -- If the stream is reset, Envoy never resumes this coroutine (and the code after
  -- the loop never runs: an upgraded HTTP/1.1 stream has no normal end in Envoy).
  for chunk in h:bodyChunks() do
    on_data(h, id, "up", chunk)
  end
  return
end

-- Redis unavailable for an upgrade whose candidates are known: in fail-open mode the
-- upgrade is still pinned to a pod (round robin over the candidates) and tracked, so
-- when Redis is back its traffic re-registers the lease and the counts include it
-- (docs/filter.md, "Failure modes"); fail closed refuses as usual.
-- `unanswered`: the admit call was sent and its answer never came, so Redis may hold a
-- lease for `id` on any candidate (settle releases it).
local fail_open_next = 0
local function fail_upgrade(h, id, pods, kind, yielded, now, unanswered)
  if FAILURE_MODE == "closed" or not pods or #pods == 0 then
    if unanswered then remember_unsettled(id, now) end
    return fail(h, true)
  end
  stats:inc("fail_open_total", 1, true)
  fail_open_next = fail_open_next % #pods + 1
  local pod = pods[fail_open_next]
  if unanswered then remember_unsettled(id, now) end
  return track(h, id, pod, kind, yielded, now, false)
end

-------------------------------------------------------------------------------
-- Non-WebSocket requests when limit_all_requests is on: rate limit only.
-------------------------------------------------------------------------------

local function limit_plain_request(h)
  local now = now_ms()
  if S.rate_limit == 0 then return end
  if now < requests_limited_until then
    stats:inc("rate_limited_cached_total")
    return refuse_rate_limited(h, requests_limited_until - now)
  end
  local r = run(h, "request_rate", { {
    script = "request_rate", keys = { K_RATE_REQUESTS, K_STATS },
    args = { S.rate_limit, S.rate_window_ms, new_conn_id() },
  } })
  if not r then return fail(h, false) end
  local status, retry_ms = r[1][1], tonumber(r[1][2]) or 1000
  if status == "RATE_LIMITED" then
    requests_limited_until = now + retry_ms
    return refuse_rate_limited(h, retry_ms)
  end
end

-------------------------------------------------------------------------------
-- Entry points.
-------------------------------------------------------------------------------

local load_logged = false

function envoy_on_request(h)
  local hdrs = h:headers()
  strip_internal(hdrs)
  if not READY then
    if not load_logged then
      load_logged = true
      for _, e in ipairs(load_errors) do h:logErr("ws-admission: " .. e) end
      h:logErr("ws-admission: filter disabled on this worker; failing " .. FAILURE_MODE)
    end
    if websocket_kind(hdrs) then fail(h, true) end
    stats:maybe_flush()
    return
  end

  local kind = websocket_kind(hdrs)
  if not kind then
    if S.limit_all_requests then limit_plain_request(h) end
    stats:maybe_flush()
    return
  end

  local now = now_ms()
  if S.rate_limit > 0 and now < rate_limited_until then
    stats:inc("rate_limited_cached_total")
    return refuse_rate_limited(h, rate_limited_until - now)
  end
  local pods, yielded, loading = candidates(h)
  if #pods == 0 then
    if loading then
      log_limited(h, "nohost", "info", "ws-admission: the worker's first host list is still being fetched; upgrade refused, retry in 1 s")
    else
      log_limited(h, "nohost", "warn", "ws-admission: no healthy host in cluster " .. S.backend_cluster)
    end
    return refuse_unavailable(h, "no_backend", 1000, "no backend available\n")
  end
  -- The same list object: the host cache keeps it until the list is refreshed, and a
  -- new list (a pod added or gone) asks Redis again.
  if now < full.until_ms and pods == full.pods then
    stats:inc("capacity_cached_total")
    return refuse_full(h, full.retry_at - now)
  end
  local id = new_conn_id()
  if not keys.valid_connection_id(id) then
    h:logErr("ws-admission: generated connection id failed validation: " .. id)
    return fail(h, true)
  end
  if now < redis_down_until then return fail_upgrade(h, id, pods, kind, yielded, now) end
  if epoch == nil and not sync_epoch(h) then return fail_upgrade(h, id, pods, kind, yielded, now) end
  local v = view_of(pods)
  local entries = { {
    script = "admit", keys = { K_RATE, K_STATS, K_LEASES, K_LOAD, K_VIEWS, K_HOSTS },
    args = { S.rate_limit, S.rate_window_ms, S.max_connections_per_pod, S.lease_ttl_ms, id, v.id, epoch },
  } }
  -- At most three asks: after an EPOCH answer (this worker's connections re-registered
  -- first) and after a HOSTS answer (the view registered), the decision itself.
  local r, a, unanswered
  for _ = 1, 3 do
    r, unanswered = run(h, "admit", entries)
    if not r then return fail_upgrade(h, id, pods, kind, yielded, now, unanswered) end
    a = r[1]
    local status = type(a) == "table" and a[1]
    if status == "EPOCH" then
      -- Redis lost its state: first this worker's open connections, then the decision.
      if not sync_epoch(h) then return fail_upgrade(h, id, pods, kind, yielded, now) end
      entries[1].args[7] = epoch
    elseif status == "HOSTS" then
      local vargs = { v.id }
      for i = 1, #pods do vargs[1 + i] = pods[i] end
      if not run(h, "register_view", { { script = "register_view", keys = { K_VIEWS, K_HOSTS, K_LOAD }, args = vargs } }) then
        return fail_upgrade(h, id, pods, kind, yielded, now)
      end
    else
      break
    end
  end
  local status = type(a) == "table" and a[1]
  if status == "ADMITTED" then
    local pod = a[2]
    -- Only a pod of this worker's own list may come back (defence in depth: the value
    -- goes to Envoy, and two lists could in theory share a view id).
    if not v.set[pod] then
      redis_failed(h, "admit", "admit returned a pod that is not in this worker's host list: " .. tostring(pod))
      run(h, "release", { { script = "release", keys = { K_LEASES, K_LOAD, K_STATS }, args = { id, tostring(pod) } } })
      return fail_upgrade(h, id, pods, kind, yielded, now)
    end
    if S.connection_inventory then
      local client_addr = h:streamInfo():downstreamRemoteAddress() or ""
      if #client_addr > 64 or client_addr:find("[^%w%.:%[%]]") then client_addr = "invalid" end
      -- A second round trip, only with the inventory on (it needs the pod admit chose).
      run(h, "conn_inventory", { { script = "conn_inventory", keys = { K_CONN .. id, K_LEASES },
        args = { id, pod, S.lease_ttl_ms, PROXY, client_addr } } })
    end
    return track(h, id, pod, kind, yielded, now, true)
  elseif status == "RATE_LIMITED" then
    local retry_ms = tonumber(a[4]) or 1000
    rate_limited_until = now + retry_ms
    return refuse_rate_limited(h, retry_ms)
  elseif status == "FULL" then
    -- admit.lua answers when the first lease would expire; slots come back sooner as
    -- connections close (close handshake, lease log), so a client is told at most this.
    local retry_ms = math.min(tonumber(a[4]) or 0, FULL_RETRY_MAX_MS)
    if retry_ms <= 0 then retry_ms = 1000 end
    if S.capacity_cache_ms > 0 then
      full.until_ms, full.retry_at, full.pods = now + math.min(S.capacity_cache_ms, retry_ms), now + retry_ms, pods
    end
    return refuse_full(h, retry_ms)
  end
  redis_failed(h, "admit", "unexpected reply")
  return fail_upgrade(h, id, pods, kind, yielded, now)
end

function envoy_on_response(h)
  if not READY then return end
  local md = h:streamInfo():dynamicMetadata():get(NS)
  local id = md and md.connection_id
  local c = id and live[id]
  if not c then
    stats:maybe_flush()
    return
  end
  local status = h:headers():get(":status")
  -- Upgraded: 101 (also what the filters see for an HTTP/2 extended CONNECT), or 200 for
  -- the raw extended CONNECT form.
  local upgraded = status == "101" or (c.kind == "h2" and status == "200")
  if not upgraded then
    release(h, id)
    return
  end
  -- Server -> client data: Envoy suspends the script between chunks and resumes it
  -- per chunk (bodyChunks(), Envoy docs). An upgraded HTTP/1.1 stream ends in a reset,
  -- which abandons the coroutine: the lease is released on the backend's Close frame
  -- seen in the loop (on_data), else by the lease log line Envoy writes when the stream
  -- ends.
  for chunk in h:bodyChunks() do
    on_data(h, id, "down", chunk)
  end
  -- Reached only when the response ends normally (an HTTP/2 extended CONNECT stream
  -- whose peer ended it, or a response that was not an upgrade after all).
  release(h, id)
end
