-- WebSocket admission: the HTTP Lua filter of the public listener.
--
-- It decides at the upgrade and then steps aside: one Redis call (ws_admit) per upgrade in
-- envoy_on_request, the status read once in envoy_on_response, and no Lua on an open
-- socket. Leases are kept from Envoy's own record of its streams: the lease log (an access
-- log with periodic entries for open streams and one at every end) that the agent sidecar
-- (lua/cli/agent.lua) turns into renewals and releases. Behaviour, responses and failure
-- modes: docs/filter.md. The parts: upgrade.lua (what a request is), admission.lua (the
-- Redis calls, ws_admit's reply as a decision), redis_link.lua (the worker's connection and
-- back-off), responses.lua (the filter's own answers), worker_stats.lua (counters outside
-- Redis).
--
-- Envoy runs one copy of this file per worker thread (one Lua state each), so the state
-- below is per worker: the Redis link, the cache of Redis's last refusals and the id counter.
-- https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/lua_filter

local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local runtime = require("runtime")
local worker_stats = require("worker_stats")
local keys = require("keys")
local hosts = require("hosts")
local upgrade = require("upgrade")
local responses = require("responses")
local admission = require("admission")
local redis_link = require("redis_link")
local client_identity = require("client_identity")

-- Dynamic metadata of an admitted stream, read by envoy_on_response and written into the
-- lease log (envoy/bootstrap.ts) as %DYNAMIC_METADATA(ws.admission:<key>)%:
--   connection_id, pod      the lease (pod absent for an upgrade routed without a decision)
--   lease                   LEASE_HELD until the filter released it itself (LEASE_RELEASED)
--   registered              "1" when Redis holds the lease, "0" for a fail-open upgrade
--   kind                    "h1" or "h2" (what counts as upgraded: 101, or 200 for h2)
local NS = "ws.admission"
-- The lease log's filter (envoy/bootstrap.ts) writes entries only for a stream whose
-- `lease` is LEASE_HELD.
local LEASE_HELD, LEASE_RELEASED = "held", "released"
local LOCAL_REPLY_HEADER = "x-ws-local-reply"
-- Envoy's own reply because the pinned pod could not be reached: its connection failed
-- (UF), it is not (or no longer) a host of the cluster (UH), retries on those ran out
-- (URX). Not a circuit breaker's overflow (UO) and the like: the pod is not at fault.
local function pod_unreachable(flags)
  for f in flags:gmatch("[^,]+") do
    if f == "UF" or f == "UH" or f == "URX" then return true end
  end
  return false
end
local LOG_EVERY_MS = 1000         -- at most one log line of a kind per worker per second
local RECOVERING_CACHE_MS = 250   -- refuse without Redis this long after a RECOVERING answer
local now_ms = runtime.now_ms

-------------------------------------------------------------------------------
-- Load time (once per worker): settings, identity, the Redis link.
-------------------------------------------------------------------------------

local S, load_errors, partial = settings_loader.load(DIR .. "/settings.lua")
load_errors = S and {} or load_errors
-- When settings are refused we still honour a valid failure_mode (default: open).
local FAILURE_MODE = (S and S.failure_mode)
  or (partial and (partial.failure_mode == "closed" or partial.failure_mode == "open") and partial.failure_mode)
  or "open"

local socket_ok, socket = pcall(require, "socket")
if not socket_ok then load_errors[#load_errors + 1] = "luasocket is not available: " .. tostring(socket) end

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(n)
  if f then f:close() end
  if not b or #b < n then
    b = ""
    for _ = 1, n do b = b .. string.char(math.random(0, 255)) end
  end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- Proxy id: POD_NAME, else the host name, as a DNS-1123-like name (settings_loader).
local PROXY = settings_loader.proxy_id(socket_ok and socket.dns.gethostname or nil)
-- Worker token: Envoy does not tell a Lua state which worker it runs on, so each worker
-- names itself with 6 random hex digits at load time (docs/filter.md).
local WORKER = random_hex(3)
math.randomseed(tonumber(random_hex(4), 16) % 2147483647)
local stats = worker_stats.writer(runtime.STATE_DIR, PROXY, WORKER, now_ms, 1000)

local last_log = {}
local function log(h, kind, level, msg)
  local now = now_ms()
  if (last_log[kind] or -math.huge) + LOG_EVERY_MS > now then return end
  last_log[kind] = now
  if level == "err" then h:logErr(msg) elseif level == "warn" then h:logWarn(msg) else h:logInfo(msg) end
end

local calls = S and admission.new(S)
local link = S and socket_ok and redis_link.new(S, stats, log, now_ms)
local READY = link ~= nil and #load_errors == 0

-------------------------------------------------------------------------------
-- Per-worker state: the connection counter and Redis's last refusals.
-------------------------------------------------------------------------------

local conn_counter = 0
-- <proxy>|<worker>|<counter>|<random>, then |<client key> when the client limits apply
-- (lua/redis/README.md, "Connection id").
local function new_conn_id(client)
  conn_counter = conn_counter + 1
  local id = PROXY .. "|" .. WORKER .. "|" .. conn_counter .. "|" .. string.format("%06x", math.random(0, 0xffffff))
  return client and (id .. "|" .. client) or id
end

local CLIENT_LIMITS = S and (S.max_connections_per_client > 0 or S.max_connections_per_client_percent > 0
  or S.rate_limit_per_client > 0)

-- The client's key (client_identity.lua), when any per-client limit is on.
local function client_of(h, hdrs)
  if not CLIENT_LIMITS then return nil end
  local header = S.client_identity == "header" and hdrs:get(S.client_header) or nil
  return client_identity.of_request(S, header, h:streamInfo():downstreamRemoteAddress())
end

-- Until these times, upgrades are refused without asking Redis: a flood costs no round trip.
local refused = {
  rate_until = 0,        -- RATE_LIMITED: until one more fits the window
  requests_until = 0,    -- the same for plain requests (limit_all_requests)
  full_until = 0,        -- FULL: capacity_cache_ms at most ...
  full_retry_at = 0,     -- ... and Redis's "first slot frees" for the Retry-After
  recovering_until = 0,  -- RECOVERING
}

-------------------------------------------------------------------------------
-- The outcomes of an upgrade.
-------------------------------------------------------------------------------

local function record(h, attempt, registered)
  local md = h:streamInfo():dynamicMetadata()
  md:set(NS, "connection_id", attempt.id)
  if attempt.pod then md:set(NS, "pod", attempt.pod) end
  md:set(NS, "kind", attempt.kind)
  md:set(NS, "registered", registered and "1" or "0")
  md:set(NS, "lease", LEASE_HELD)
end

-- Redis unavailable (or the filter unusable): route normally, or refuse, by config. A
-- routed upgrade is recorded without a pod: the agent registers its lease on the pod
-- Envoy chose (the lease log's upstream host) once Redis answers again.
local function fail(h, attempt)
  if FAILURE_MODE == "closed" then
    stats:inc("rejected_redis_unavailable_total", 1, true)
    return responses.redis_unavailable(h)
  end
  stats:inc("fail_open_total", 1, true)
  if attempt and attempt.id then record(h, attempt, false) end
end

local function admitted(h, attempt, pod)
  -- The pod goes to Envoy and into the lease log: only an ip:port Envoy could list.
  if not hosts.valid_pod(pod) then
    link:failed(h, "admit", "ws_admit returned a pod that is not ip:port: " .. tostring(pod))
    return fail(h, attempt)
  end
  attempt.pod = pod
  -- https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/lua_filter
  -- setUpstreamOverrideHost(host, strict): strict => Envoy answers 503 itself if the host
  -- is gone; envoy_on_response then gives the lease and the window entry back.
  h:setUpstreamOverrideHost(pod, true)
  record(h, attempt, true)
end

local function refuse(h, d, now)
  if d.status == "RATE_LIMITED" then
    refused.rate_until = now + d.retry_ms
    return responses.rate_limited(h, S.rate_limit, d.retry_ms)
  elseif d.status == "CLIENT" then
    return responses.client_limited(h, d.retry_ms)
  elseif d.status == "FULL" then
    if S.capacity_cache_ms > 0 then
      refused.full_until, refused.full_retry_at = now + math.min(S.capacity_cache_ms, d.retry_ms), now + d.retry_ms
    end
    return responses.full(h, d.retry_ms)
  elseif d.status == "RECOVERING" then
    refused.recovering_until = now + math.min(RECOVERING_CACHE_MS, d.retry_ms)
    stats:inc("rejected_recovering_total")
    log(h, "recovering", "info", "ws-admission: Redis lost its state; upgrades wait until every proxy has put its streams back")
    return responses.recovering(h, d.retry_ms)
  end
  stats:inc("rejected_no_backend_total")
  log(h, "nohost", "warn", "ws-admission: Redis knows no healthy host of this proxy (the agent sidecar registers them)")
  return responses.no_backend(h)
end

-- Answers this worker already knows from Redis's last refusals; true when it answered.
local function answered_from_cache(h, now)
  if S.rate_limit > 0 and now < refused.rate_until then
    stats:inc("rate_limited_cached_total")
    responses.rate_limited(h, S.rate_limit, refused.rate_until - now)
  elseif now < refused.recovering_until then
    stats:inc("rejected_recovering_total")
    responses.recovering(h, refused.recovering_until - now)
  elseif now < refused.full_until then
    stats:inc("capacity_cached_total")
    responses.full(h, refused.full_retry_at - now)
  else
    return false
  end
  return true
end

-------------------------------------------------------------------------------
-- Non-WebSocket requests when limit_all_requests is on: rate limit only.
-------------------------------------------------------------------------------

local function limit_plain_request(h)
  local now = now_ms()
  if S.rate_limit == 0 then return end
  if now < refused.requests_until then
    stats:inc("rate_limited_cached_total")
    return responses.rate_limited(h, S.rate_limit, refused.requests_until - now)
  end
  local r = link:run(h, "request_rate", { calls.request_rate(new_conn_id()) })
  if not r then
    if FAILURE_MODE == "closed" then
      stats:inc("rejected_redis_unavailable_total", 1, true)
      return responses.redis_unavailable(h)
    end
    return
  end
  local status, retry_ms = r[1][1], tonumber(r[1][2]) or 1000
  if status == "RATE_LIMITED" then
    refused.requests_until = now + retry_ms
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
  if upgrade.websocket_kind(hdrs) then fail(h, nil) end
  stats:maybe_flush()
end

function envoy_on_request(h)
  local hdrs = h:headers()
  upgrade.strip_internal(hdrs)
  if not READY then return disabled(h, hdrs) end
  local kind = upgrade.websocket_kind(hdrs)
  if not kind then
    if S.limit_all_requests then limit_plain_request(h) end
    return stats:maybe_flush()
  end
  local now = now_ms()
  if answered_from_cache(h, now) then return end

  -- Redis decides: one round trip.
  local attempt = { id = new_conn_id(client_of(h, hdrs)), kind = kind }
  if not keys.valid_connection_id(attempt.id) then
    h:logErr("ws-admission: generated connection id failed validation: " .. attempt.id)
    return fail(h, nil)
  end
  local client = S.connection_inventory and (h:streamInfo():downstreamRemoteAddress() or "") or nil
  if client and (#client > 64 or client:find("[^%w%.:%[%]-]")) then client = "invalid" end
  local r = link:run(h, "admit", { calls.admit(attempt.id, client) })
  local d = r and admission.decide(r[1], responses.FULL_RETRY_MAX_MS)
  if r and not d then link:failed(h, "admit", "unexpected reply") end
  stats:maybe_flush()
  if not d then return fail(h, attempt) end
  if d.status == "ADMITTED" then return admitted(h, attempt, d.pod) end
  return refuse(h, d, now)
end

-- Upgraded (101; 200 for the raw HTTP/2 extended CONNECT): nothing to do, the lease log
-- keeps the lease from here on. Anything else: the lease is given back now, and when
-- Envoy answered itself (no backend reached: the pinned host is gone or refused the
-- connection), its window entry too, and the pod is passed over by every proxy for
-- penalty_ms (ws_leases op F).
function envoy_on_response(h)
  local hdrs = h:headers()
  -- Envoy's local reply config sets it on Envoy's own replies only (envoy/bootstrap.ts
  -- LOCAL_REPLY_HEADER; the route removes it from backends' answers). The router's
  -- x-envoy-upstream-service-time cannot tell: it is never on the answer to an upgrade.
  local flags = hdrs:get(LOCAL_REPLY_HEADER)
  if flags then hdrs:remove(LOCAL_REPLY_HEADER) end
  if not READY then return end
  local md = h:streamInfo():dynamicMetadata():get(NS)
  if not (md and md.connection_id and md.pod and md.registered == "1") then return end
  local status = hdrs:get(":status")
  if status == "101" or (md.kind == "h2" and status == "200") then return end
  local op = flags and pod_unreachable(flags) and "F" or "X"
  -- Released: no lease log line for this stream. Not released (Redis failed): the lease
  -- stays LEASE_HELD, so the stream's end entry makes the agent retry.
  if link:run(h, "release", { calls.leases({ { op, md.connection_id, md.pod } }) }) then
    h:streamInfo():dynamicMetadata():set(NS, "lease", LEASE_RELEASED)
  end
  stats:maybe_flush()
end
