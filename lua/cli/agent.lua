-- agent.lua: the admission agent of one proxy, beside Envoy (the `agent` sidecar of the
-- Envoy pod, constructs/envoy.ts; one per proxy in `npm run local`). It keeps Redis's
-- record of this proxy true to Envoy's own, so that Envoy's workers make one Redis call per
-- upgrade and none on an open socket:
--
--   the lease log (lua/agent/lease_log.lua)   Envoy's entries for this proxy's streams: a
--                                             renewal per periodic entry, a release per end
--                                             (lua/agent/streams.lua)
--   admin /stats, every second (/clusters     this proxy's healthy hosts (host_registry.lua)
--   when they moved, or 10 s passed)
--   a beat, every second                      its slot stays alive; a Redis that lost its
--                                             state gets every open stream and host back
--                                             before anything is admitted (fleet.lua)
--   a metrics snapshot, every metrics_snapshot_ms   $WS_STATE_DIR/metrics.snapshot,
--                                             served by metrics.lua (snapshot_file.lua)
--
--   luajit agent.lua [--once]     (--once: read the lease log, apply it, then exit; tests)
--
-- Environment: WS_LUA_DIR (settings.lua and the modules), WS_STATE_DIR (the lease log and
-- the files above), WS_ENVOY_ADMIN (host:port of Envoy's loopback admin), POD_NAME (the
-- proxy id, as the filter takes it). It writes the time to $WS_STATE_DIR/agent.alive every
-- second (its liveness probe; ready.lua reads it too).
local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local runtime = require("runtime")
local resp = require("resp")
local socket = require("socket")
local lease_log = require("lease_log")
local streams_mod = require("streams")
local host_registry = require("host_registry")
local fleet_mod = require("fleet")
local snapshot_file = require("snapshot_file")
local drain_marker = require("drain_marker")

local POLL_S = 0.05       -- how often the lease log is read
local BEAT_MS = 1000      -- beats and host list polls
local RETRY_MS = 500      -- after a Redis failure

local function log(msg)
  io.stdout:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " agent: ", msg, "\n")
  io.stdout:flush()
end

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(n) or ""
  if f then f:close() end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function now_ms() return math.floor(runtime.now_ms()) end

-- The agent's state: its parts and when each periodic duty is due.
local function new_agent(S)
  local calls = require("admission").new(S)
  local proxy = settings_loader.proxy_id(socket.dns.gethostname)
  local client = resp.new(settings_loader.redis_options(S))
  local admin = os.getenv("WS_ENVOY_ADMIN")
  local a = {
    S = S, calls = calls, proxy = proxy, client = client, started = now_ms(),
    follower = lease_log.follower(runtime.path("lease_log"), admin, log, socket.gettime),
    streams = streams_mod.new(S, now_ms),
    registry = host_registry.new(S, proxy, calls, admin, log),
    fleet = fleet_mod.new(calls, proxy, random_hex),
    next_beat = 0, next_snapshot = 0, redis_down_until = 0, last_alive = 0,
    recovering = nil, last_err = nil, dropped_reported = 0,
  }
  -- One round trip; an error reply of a function counts as a failure.
  function a.run(entries)
    local replies, err = client:run(entries)
    if replies then
      for i = 1, #replies do
        if resp.is_error(replies[i]) then return nil, replies[i].err end
      end
    end
    return replies, err
  end
  return a
end

local function redis_failed(a, what, err)
  a.redis_down_until = now_ms() + RETRY_MS
  if tostring(err) ~= a.last_err then log("Redis " .. what .. " failed (" .. tostring(err) .. "); retrying") end
  a.last_err = tostring(err)
end

local function redis_ok(a)
  if a.last_err then log("Redis reachable again") end
  a.last_err = nil
end

local function alive(a)
  local now = os.time()
  if now == a.last_alive then return end
  a.last_alive = now
  local f = io.open(runtime.path("agent_alive"), "wb")
  if f then
    f:write(now, "\n")
    f:close()
  end
end

-- After a state loss (or with none yet): the epoch, this proxy's hosts, every open stream,
-- then "done". Until done, Redis admits nothing (ws_admit answers RECOVERING).
local function recover(a)
  local epoch, err = a.fleet:begin(a.run)
  if not epoch then return redis_failed(a, "recovery", err) end
  a.recovering = epoch
  a.registry:reset()
  local list, lerr = a.registry:healthy()
  if not list then log("recovery: " .. tostring(lerr) .. "; hosts registered with the next poll") end
  local ok, rerr = true, nil
  if list then ok, rerr = a.registry:sync(list, a.run) end
  if not ok then return redis_failed(a, "recovery (hosts)", rerr) end
  a.streams:reregister_all()
  local totals, ferr = a.streams:flush(a.calls, a.run)
  if not totals then return redis_failed(a, "recovery (streams)", ferr) end
  local waiting, derr = a.fleet:done(a.run)
  if not waiting then return redis_failed(a, "recovery (done)", derr) end
  a.fleet.epoch, a.recovering = epoch, nil
  log(string.format("Redis state %s: put back %d open stream(s) and %d host(s); %d proxy(ies) still awaited",
    epoch, totals[2], a.registry.size, waiting))
end

local function beat(a)
  local b, err = a.fleet:beat(a.run, a.registry.slot)
  if not b then return redis_failed(a, "beat", err) end
  redis_ok(a)
  local change = a.fleet:change(b)
  if change == "recover" or a.recovering then return recover(a) end
  if change == "adopt" then a.fleet.epoch = b.epoch end
  if a.registry.slot and not b.slot_ok then
    log("slot " .. a.registry.slot .. " lost (no beat for too long); registering the hosts again")
    a.registry:reset()
  end
  local list, lerr = a.registry:healthy(now_ms() / 1000)
  if list == false then return end -- nothing changed
  if not list then return log(lerr) end
  local ok, serr = a.registry:sync(list, a.run)
  if not ok then redis_failed(a, "host registration", serr) end
end

local function snapshot(a)
  local call = a.calls.snapshot()
  local r, err = a.client:fcall(call.fn, call.keys, call.args)
  local snap
  if r and not resp.is_error(r) and type(r) == "table" then
    snap = { redis_up = true, window_used = tonumber(r[2]) or 0, stats = {}, pods = {}, proxies = {}, gauges = {} }
    local st, pc, xc, g = r[3] or {}, r[4] or {}, r[5] or {}, r[6] or {}
    for i = 1, #st, 2 do snap.stats[st[i]] = tonumber(st[i + 1]) or 0 end
    for i = 1, #pc, 2 do snap.pods[#snap.pods + 1] = { pc[i], tonumber(pc[i + 1]) or 0 } end
    for i = 1, #xc, 2 do snap.proxies[#snap.proxies + 1] = { xc[i], tonumber(xc[i + 1]) or 0 } end
    for i = 1, #g, 2 do snap.gauges[g[i]] = tonumber(g[i + 1]) or 0 end
  else
    snap = { redis_up = false, error = r and (resp.is_error(r) and r.err or "unexpected reply") or err }
  end
  local ok, werr = snapshot_file.write(runtime.path("snapshot"), snapshot_file.format(snap, now_ms()))
  if not ok then log("cannot write the metrics snapshot: " .. tostring(werr)) end
end

-- One round of the loop; true when the lease log was read to its end.
local function round(a, catching_up)
  alive(a)
  local switched = a.follower:switched()
  local at_end = a.follower:read(function(rec) a.streams:apply(rec, catching_up) end)
  a.follower:rotate(at_end, switched)
  if catching_up then return at_end end
  a.streams.draining = drain_marker.active(a.started)
  local now = now_ms()
  if now >= a.redis_down_until then
    if now >= a.next_beat then
      a.next_beat = now + BEAT_MS
      a.streams:sweep()
      beat(a)
    end
    if a.streams:pending() > 0 and not a.recovering then
      local totals, err = a.streams:flush(a.calls, a.run)
      if totals then redis_ok(a) else redis_failed(a, "lease update", err) end
    end
  end
  if now >= a.next_snapshot then
    a.next_snapshot = now + a.S.metrics_snapshot_ms
    snapshot(a)
  end
  if a.streams.dropped > a.dropped_reported then
    log(a.streams.dropped - a.dropped_reported .. " lease operations dropped while Redis was unavailable"
      .. " (open streams come back with their next periodic entry)")
    a.dropped_reported = a.streams.dropped
  end
  return at_end
end

local function main(argv)
  local once = argv[1] == "--once"
  if argv[1] and not once then
    io.stderr:write("usage: luajit agent.lua [--once]\n")
    os.exit(2)
  end
  local S, errs = settings_loader.load(DIR .. "/settings.lua")
  if not S then
    log("FAILED: bad settings: " .. table.concat(errs, "; "))
    os.exit(1)
  end
  local a = new_agent(S)
  log("proxy " .. a.proxy .. ": following " .. runtime.path("lease_log") .. ", Redis " .. S.redis_host .. ":" .. S.redis_port)
  -- What Envoy wrote before this agent started: read to the end, then acted on as a whole.
  while not round(a, true) do end
  a.streams:finish_catch_up()
  while true do
    local at_end = round(a, false)
    if once and at_end and (a.streams:pending() == 0 or a.last_err) then break end
    if at_end then socket.sleep(POLL_S) end
  end
  log(string.format("%d stream(s) open; %d unreadable line(s)", a.streams.count, a.follower.bad))
  os.exit(a.last_err and 1 or 0)
end

local ok, err = pcall(main, arg or {})
if not ok then
  log("FAILED: unexpected error: " .. tostring(err))
  os.exit(1)
end
