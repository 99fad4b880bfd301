-- WebSocket admission: the HTTP Lua filter of the public listener.
--
-- Behaviour, responses, failure modes and the Envoy API facts this file relies on:
-- docs/filter.md. The parts: upgrade.lua (what a request is), host_source.lua (the
-- candidates and their view), admission.lua (the Redis calls and admit's reply as a
-- decision), responses.lua (the filter's own answers), drain_marker.lua, runtime.lua (the
-- state directory, the clock). This file holds the worker's state and the flow.
--
-- Envoy runs one copy of this file per worker thread (one Lua state each), so every
-- `local` below is per worker: the Redis connection, the host cache, the "rate limited
-- until" cache and the table of live connections.
-- https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/lua_filter
-- ("All Lua environments are per worker thread").

local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local runtime = require("runtime")
local worker_stats = require("worker_stats")
local ws_frames = require("ws_frames")
local keys = require("keys")
local upgrade = require("upgrade")
local responses = require("responses")
local admission = require("admission")
local host_source = require("host_source")
local drain_marker = require("drain_marker")

-- Dynamic metadata namespace for {connection_id, pod, lease}: visible to access logs as
-- %DYNAMIC_METADATA(ws.admission:pod)% and to envoy_on_response of the same stream.
-- `lease` is "held" from the admission until the filter releases the lease itself
-- ("released"): the lease log (envoy/bootstrap.ts, lease_log.lua) writes a line for
-- every stream that ends while it is still "held", resets included, and that line
-- releases it.
local NS = "ws.admission"
local LEASE_HELD, LEASE_RELEASED = "held", "released"
local REDIS_BACKOFF_MS = 500   -- after a Redis failure, skip Redis this long (fail per mode)
local LOG_EVERY_MS = 1000      -- at most one warning of a kind per worker per second
-- How long the worker remembers a one-way stream (see track) without seeing its data. Its
-- client may keep it open while talking (unseen) for any time; when its server speaks
-- again, the lease (lapsed by then) must still be re-registered.
local ONE_WAY_KEEP_MS = 3600 * 1000
local now_ms = runtime.now_ms

-------------------------------------------------------------------------------
-- Load time (once per worker): settings, identity, the Redis client.
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
local stats = worker_stats.writer(runtime.STATE_DIR, PROXY, WORKER, now_ms, 1000)
-- A drain marker counts only if written after this worker loaded (drain_marker.lua).
local LOADED_MS = now_ms()

local calls, client
if S then
  calls = admission.new(S)
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
local conn_counter = 0
local live = {}              -- connection id -> { pod, last_renew, last_seen, kind, one_way, backend_frames }
local live_count = 0
local admissions_since_sweep = 0
local last_log = {}

local function log_limited(h, kind, level, msg)
  local now = now_ms()
  if (last_log[kind] or -math.huge) + LOG_EVERY_MS > now then return end
  last_log[kind] = now
  if level == "err" then h:logErr(msg) elseif level == "warn" then h:logWarn(msg) else h:logInfo(msg) end
end

local hosts = S and host_source.new(S, log_limited)

local function new_conn_id()
  conn_counter = conn_counter + 1
  return PROXY .. "|" .. WORKER .. "|" .. conn_counter .. "|" .. string.format("%06x", math.random(0, 0xffffff))
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
-- phantom) on a pod the filter never learnt. Each entry: { id, at }. The next round trip
-- that works first gives those leases back (settle: release_proxy.lua limited to these
-- ids), so a phantom lives until this worker's next good Redis call, and never longer
-- than the lease TTL (docs/filter.md, "Failure modes"). A fail-open upgrade tracked under
-- such an id loses its lease too, if Redis had granted one: its next renewal re-registers it.
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
  local ids = {}
  for i = 1, #unsettled do
    if now - unsettled[i].at < S.lease_ttl_ms then ids[#ids + 1] = unsettled[i].id end
  end
  local taken = #unsettled
  local removed, steps, cursor = 0, 0, "0"
  if #ids > 0 then
    repeat
      local replies, err = client:run({ calls.release_proxy(PROXY, cursor, ids) })
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
      cursor = tostring(r[1])
      steps = steps + 1
    until cursor == "0" or steps >= SETTLE_MAX_STEPS
  end
  for _ = 1, taken do table.remove(unsettled, 1) end
  if removed > 0 then
    stats:inc("phantom_leases_released_total", removed, true)
    log_limited(h, "phantom", "info", "ws-admission: released " .. removed .. " lease(s) that Redis granted to "
      .. "admission(s) whose answer timed out")
  end
  return true
end

-- Runs entries; returns replies, or nil after counting and logging a failure. A Redis
-- error reply to one of our scripts counts as a failure too. On a transport failure the
-- second value is true: the entries may have run (unanswered).
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

local function reregister(h, id, c)
  if drain_marker.active(LOADED_MS) then
    log_limited(h, "drain", "info", "ws-admission: lease of " .. id .. " on " .. c.pod
      .. " is gone and this proxy is draining; not re-registered")
    return
  end
  local r = run(h, "reregister", { calls.reregister(id, c.pod) })
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
  if drain_marker.active(LOADED_MS) then return true end
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
    entries[#entries + 1] = calls.reregister(id, c.pod)
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
    { "HSETNX", calls.K.stats, EPOCH_FIELD, hex(random_bytes(8) or tostring(math.random(0, 0x7fffffff))) },
    { "HGET", calls.K.stats, EPOCH_FIELD },
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

-------------------------------------------------------------------------------
-- Live connections: renewals, release, the sweep of reset streams.
-------------------------------------------------------------------------------

-- Renews the lease of a live connection when renew_interval_ms has passed since the
-- last renewal; called on data in either direction.
local function touch(h, id)
  local c = live[id]
  if not c then return end
  local now = now_ms()
  c.last_seen = now
  if now - c.last_renew < S.renew_interval_ms then return end
  c.last_renew = now
  local entries = { calls.renew(id, c.pod) }
  if S.connection_inventory then entries[2] = calls.inventory_renew(id) end
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
  local entries = { calls.release(id, c.pod) }
  if S.connection_inventory then entries[2] = calls.inventory_delete(id) end
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
-- The outcomes of an upgrade: tracked on its pod, refused, or failed per failure_mode.
-------------------------------------------------------------------------------

-- Redis unavailable (or the filter unusable): route normally, or refuse, by config.
local function fail(h, is_upgrade)
  if FAILURE_MODE == "closed" then
    stats:inc("rejected_redis_unavailable_total", 1, true)
    responses.redis_unavailable(h)
  elseif is_upgrade then
    stats:inc("fail_open_total", 1, true)
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
  local md = h:streamInfo():dynamicMetadata()
  md:set(NS, "connection_id", id)
  md:set(NS, "pod", pod)
  md:set(NS, "lease", LEASE_HELD)
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
end

-- Redis unavailable for an upgrade whose candidates are known: in fail-open mode the
-- upgrade is still pinned to a pod (round robin over the candidates) and tracked, so
-- when Redis is back its traffic re-registers the lease and the counts include it
-- (docs/filter.md, "Failure modes"); fail closed refuses as usual.
-- `unanswered`: the admit call was sent and its answer never came, so Redis may hold a
-- lease for `id` on some pod (settle releases it).
local fail_open_next = 0
local function fail_upgrade(h, id, pods, kind, yielded, now, unanswered)
  if unanswered then remember_unsettled(id, now) end
  if FAILURE_MODE == "closed" or not pods or #pods == 0 then return fail(h, true) end
  stats:inc("fail_open_total", 1, true)
  fail_open_next = fail_open_next % #pods + 1
  return track(h, id, pods[fail_open_next], kind, yielded, now, false)
end

-------------------------------------------------------------------------------
-- The decision: admit.lua with this worker's view, until it decides.
-------------------------------------------------------------------------------

-- Asks admit.lua, at most three times: after an EPOCH answer (this worker's connections
-- re-registered first) and after a HOSTS answer (the view registered), the decision
-- itself. Returns the decision (admission.decide), or nil and whether the last call went
-- unanswered.
local function decide(h, id, pods, view)
  for _ = 1, 3 do
    local r, unanswered = run(h, "admit", { calls.admit(id, view.id, epoch) })
    if not r then return nil, unanswered end
    local d = admission.decide(r[1], responses.FULL_RETRY_MAX_MS)
    if not d then
      redis_failed(h, "admit", "unexpected reply")
      return nil
    end
    if d.status == "EPOCH" then
      -- Redis lost its state: first this worker's open connections, then the decision.
      if not sync_epoch(h) then return nil end
    elseif d.status == "HOSTS" then
      if not run(h, "register_view", { calls.register_view(view.id, pods) }) then return nil end
    else
      return d
    end
  end
  redis_failed(h, "admit", "no decision after re-registering the epoch and the host view")
  return nil
end

local function admitted(h, id, pod, view, kind, yielded, now, pods)
  -- Only a pod of this worker's own list may come back (defence in depth: the value goes
  -- to Envoy, and two lists could in theory share a view id).
  if not view.set[pod] then
    redis_failed(h, "admit", "admit returned a pod that is not in this worker's host list: " .. tostring(pod))
    run(h, "release", { calls.release(id, pod) })
    return fail_upgrade(h, id, pods, kind, yielded, now)
  end
  if S.connection_inventory then
    local client_addr = h:streamInfo():downstreamRemoteAddress() or ""
    if #client_addr > 64 or client_addr:find("[^%w%.:%[%]]") then client_addr = "invalid" end
    -- A second round trip, only with the inventory on (it needs the pod admit chose).
    run(h, "conn_inventory", { calls.inventory(id, pod, PROXY, client_addr) })
  end
  return track(h, id, pod, kind, yielded, now, true)
end

-------------------------------------------------------------------------------
-- Non-WebSocket requests when limit_all_requests is on: rate limit only.
-------------------------------------------------------------------------------

local function limit_plain_request(h)
  local now = now_ms()
  if S.rate_limit == 0 then return end
  if now < requests_limited_until then
    stats:inc("rate_limited_cached_total")
    return responses.rate_limited(h, S.rate_limit, requests_limited_until - now)
  end
  local r = run(h, "request_rate", { calls.request_rate(new_conn_id()) })
  if not r then return fail(h, false) end
  local status, retry_ms = r[1][1], tonumber(r[1][2]) or 1000
  if status == "RATE_LIMITED" then
    requests_limited_until = now + retry_ms
    return responses.rate_limited(h, S.rate_limit, retry_ms)
  end
end

-------------------------------------------------------------------------------
-- Entry points.
-------------------------------------------------------------------------------

local load_logged = false
local function disabled(h, hdrs)
  if not load_logged then
    load_logged = true
    for _, e in ipairs(load_errors) do h:logErr("ws-admission: " .. e) end
    h:logErr("ws-admission: filter disabled on this worker; failing " .. FAILURE_MODE)
  end
  if upgrade.websocket_kind(hdrs) then fail(h, true) end
  stats:maybe_flush()
end

function envoy_on_request(h)
  local hdrs = h:headers()
  upgrade.strip_internal(hdrs)
  if not READY then return disabled(h, hdrs) end
  local kind = upgrade.websocket_kind(hdrs)
  if not kind then
    if S.limit_all_requests then limit_plain_request(h) end
    stats:maybe_flush()
    return
  end

  -- Answers this worker already knows.
  local now = now_ms()
  if S.rate_limit > 0 and now < rate_limited_until then
    stats:inc("rate_limited_cached_total")
    return responses.rate_limited(h, S.rate_limit, rate_limited_until - now)
  end
  local pods, yielded, loading = hosts.candidates(h)
  if #pods == 0 then
    if loading then
      log_limited(h, "nohost", "info", "ws-admission: the worker's first host list is still being fetched; upgrade refused, retry in 1 s")
    else
      log_limited(h, "nohost", "warn", "ws-admission: no healthy host in cluster " .. S.backend_cluster)
    end
    return responses.no_backend(h)
  end
  -- The same list object: the host cache keeps it while the list is unchanged, and a new
  -- list (a pod added or gone) asks Redis again.
  if now < full.until_ms and pods == full.pods then
    stats:inc("capacity_cached_total")
    return responses.full(h, full.retry_at - now)
  end

  -- Redis decides.
  local id = new_conn_id()
  if not keys.valid_connection_id(id) then
    h:logErr("ws-admission: generated connection id failed validation: " .. id)
    return fail(h, true)
  end
  if now < redis_down_until or (epoch == nil and not sync_epoch(h)) then
    return fail_upgrade(h, id, pods, kind, yielded, now)
  end
  local view = hosts.view_of(pods)
  local d, unanswered = decide(h, id, pods, view)
  if not d then return fail_upgrade(h, id, pods, kind, yielded, now, unanswered) end
  if d.status == "ADMITTED" then return admitted(h, id, d.pod, view, kind, yielded, now, pods) end
  if d.status == "RATE_LIMITED" then
    rate_limited_until = now + d.retry_ms
    return responses.rate_limited(h, S.rate_limit, d.retry_ms)
  end
  if S.capacity_cache_ms > 0 then
    full.until_ms, full.retry_at, full.pods = now + math.min(S.capacity_cache_ms, d.retry_ms), now + d.retry_ms, pods
  end
  return responses.full(h, d.retry_ms)
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
  if not (status == "101" or (c.kind == "h2" and status == "200")) then return release(h, id) end
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
