-- drain.lua: release every lease this proxy holds, once, when its pod terminates.
--
-- Not an Envoy filter: a standalone LuaJIT program run by the Envoy container's preStop
-- hook at the end of its sleep (constructs/envoy.ts), right before the kubelet sends
-- SIGTERM and Envoy resets every open WebSocket. Their end entries would release the
-- leases too, but only if the agent sidecar is still there to read them when the pod goes:
-- this makes the slots come back whatever happens after SIGTERM. Redis side:
-- ws_release_proxy (lua/redis/README.md).
--
--   luajit /etc/envoy/lua/drain.lua [--log-file PATH]
--
-- Reads settings.lua (WS_LUA_DIR, checked by settings_loader.lua like the filter does),
-- takes the proxy id exactly as filter.lua does (POD_NAME, else the host name), writes
-- the marker $WS_STATE_DIR/draining (the agent stops renewing leases), connects with
-- resp.lua (AUTH from redis_password_file, TLS when redis_tls), then runs
-- ws_release_proxy step by step over the leases (one call per 1000 leases scanned).
--
-- Output: one line on stdout, `drain: released N leases of proxy P ...` or
-- `drain: FAILED ...`. An exec hook's output is not in the container log (the kubelet
-- shows it only in the FailedPreStopHook event), so `--log-file PATH` appends the same
-- line there as well, best effort (the preStop hook passes /proc/1/fd/1: Envoy's stdout).
--
-- Exit status: 0 when the leases were released (or there were none); 1 on any failure.
-- A failing preStop hook does not stop or delay the termination: the kubelet records a
-- FailedPreStopHook warning event carrying this output and goes on to SIGTERM. That
-- event is the only place an operator sees the failure, so it is reported, not hidden;
-- the leases then expire by themselves within lease_ttl_ms.
--
-- Time: every Redis round trip is bounded by redis_connect_timeout_ms /
-- redis_read_timeout_ms (resp.lua). Name resolution of redis_host is not (getaddrinfo
-- has no timeout); the hook wraps this program in `timeout` for that.

local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local MAX_STEPS = 100000 -- scan steps of 1000 leases: 10^8 leases, far beyond any fleet

local log_file

local function emit(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
  if log_file then
    pcall(function()
      local f = io.open(log_file, "a")
      if f then
        f:write(line, "\n")
        f:close()
      end
    end)
  end
end

local proxy_for_msg = "?"
local function fail(msg)
  emit("drain: FAILED to release the leases of proxy " .. proxy_for_msg .. ": " .. msg
    .. " (they expire by themselves within the lease TTL)")
  os.exit(1)
end

-- Sets log_file from --log-file PATH; anything else fails.
local function read_args(argv)
  local i = 1
  while i <= #argv do
    if argv[i] == "--log-file" and argv[i + 1] and argv[i + 1] ~= "" then
      log_file = argv[i + 1]
      i = i + 2
    else
      fail("unknown argument '" .. tostring(argv[i]) .. "' (usage: luajit drain.lua [--log-file PATH])")
    end
  end
end

-- First mark the proxy as draining (drain_marker.lua, shared with the agent): the agent
-- stops renewing this proxy's leases, so a periodic entry written between this release
-- and SIGTERM does not put a slot back. Best effort: without the marker such a lease
-- is released by the stream's end entry, or expires within the lease TTL. Returns what
-- the output line says of it ("" when marked).
local function mark_draining(proxy)
  local marked, merr = require("drain_marker").write(require("runtime").now_ms(), proxy)
  if marked then return "" end
  return "; no draining marker (" .. tostring(merr) .. "): a periodic entry before SIGTERM may renew a lease again"
end

-- ws_release_proxy scans the leases 1000 at a time; one call per step, so Redis is
-- never blocked for more than one step. Returns the leases released and the steps.
local function release_leases(client, calls, proxy, where)
  local resp = require("resp")
  local released, steps, cursor = 0, 0, "0"
  repeat
    local call = calls.release_proxy(proxy, cursor)
    local r, rerr = client:fcall(call.fn, call.keys, call.args)
    local done = released > 0 and (" after releasing " .. released .. " leases") or ""
    if r == nil then fail(where .. " unavailable" .. done .. ": " .. tostring(rerr)) end
    if resp.is_error(r) then fail(where .. ": ws_release_proxy" .. done .. ": " .. r.err) end
    if type(r) ~= "table" or tonumber(r[2]) == nil then
      fail(where .. ": ws_release_proxy answered " .. type(r) .. ", not {cursor, count}")
    end
    released = released + tonumber(r[2])
    cursor = tostring(r[1])
    steps = steps + 1
  until cursor == "0" or steps >= MAX_STEPS
  return released, steps
end

local function main(argv)
  read_args(argv)
  local settings_loader = require("settings_loader")
  local S, errs = settings_loader.load(DIR .. "/settings.lua")

  local socket_ok, socket = pcall(require, "socket")

  -- Proxy id: as filter.lua derives it (settings_loader.proxy_id), so the prefix matches
  -- the connection ids this proxy's workers wrote.
  local proxy = settings_loader.proxy_id(socket_ok and socket.dns.gethostname or nil)
  proxy_for_msg = proxy

  if not S then fail("bad settings: " .. table.concat(errs, "; ")) end
  if not socket_ok then fail("luasocket is not available: " .. tostring(socket)) end
  -- "unknown" is what every proxy without a name falls back to: its leases may belong
  -- to several proxies, some of them still serving. Releasing them would free slots of
  -- open connections.
  if proxy == "unknown" then
    fail("no proxy id (POD_NAME is unset and the host name is unknown); refusing to release the shared id 'unknown'")
  end

  local marker_note = mark_draining(proxy)
  local resp = require("resp")
  local calls = require("admission").new(S)
  local client = resp.new(settings_loader.redis_options(S))
  local where = "Redis " .. S.redis_host .. ":" .. S.redis_port
  local started = socket.gettime()
  local released, steps = release_leases(client, calls, proxy, where)
  client:close()
  emit(string.format("drain: released %d leases of proxy %s (%d scan steps, %d ms)%s",
    released, proxy, steps, math.floor((socket.gettime() - started) * 1000 + 0.5), marker_note))
  os.exit(0)
end

local ok, err = pcall(main, arg or {})
if not ok then fail("unexpected error: " .. tostring(err)) end
