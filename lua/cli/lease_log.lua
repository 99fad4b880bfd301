-- lease_log.lua: releases the leases of WebSocket streams that ended without the filter
-- releasing them itself (client or backend dropped the connection, idle timeout,
-- max_stream_duration, a strict override that found its host gone).
--
-- Not an Envoy filter: a standalone LuaJIT program beside Envoy (the `lease-log` sidecar
-- of the Envoy pod, constructs/envoy.ts; one per proxy in `npm run local`).
--
-- Why: Envoy never ends an upgraded HTTP/1.1 stream normally; every end is a stream
-- reset, and a reset abandons the filter's coroutines, so no filter code runs when a
-- connection goes away. The one thing Envoy does for every stream end, resets included,
-- is write its access logs. The public listener has one for this program
-- (envoy/bootstrap.ts, leaseLog): a line `lease <connection id> <pod>` for each stream
-- whose dynamic metadata still says its lease is "held" when it ends. This program
-- follows that file and runs release.lua for each line.
--
--   luajit lease_log.lua [--once]     (--once: process what is there, then exit; tests)
--
-- Environment: WS_LUA_DIR (settings.lua, the scripts), WS_STATE_DIR (the file is
-- $WS_STATE_DIR/leases.log), WS_ENVOY_ADMIN (host:port of Envoy's loopback admin, for
-- rotating the file). Every second it writes the time to $WS_STATE_DIR/lease-log.alive
-- (the sidecar's liveness probe).
--
-- Releasing twice is harmless (release.lua answers 0 for a lease already gone), so the
-- program starts from the top of the file and keeps no offset across restarts.
--
-- Rotation, without losing a line: past ROTATE_BYTES it renames the file to
-- leases.log.old and asks Envoy to reopen its access logs (admin POST /reopen_logs);
-- Envoy goes on appending to the old file until its flush thread reopens, then creates
-- a new leases.log. Once that exists the old file is read to its end and deleted. If the
-- admin cannot be reached the name is put back (Envoy still writes to that file, and a
-- later reopen would open it again), and only past HARD_MAX_BYTES is the file truncated,
-- losing what Envoy writes in between (those leases expire within the lease TTL).
local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local hosts = require("hosts")
local keys = require("keys")
local resp = require("resp")
local socket = require("socket")

local POLL_S = 0.05               -- how often the file is checked for new lines
local READ_MAX = 256 * 1024       -- bytes read per round (memory stays bounded)
-- Rotate once read past this (WS_LEASE_LOG_ROTATE_BYTES: tests make it small).
local ROTATE_BYTES = tonumber(os.getenv("WS_LEASE_LOG_ROTATE_BYTES") or "") or 1024 * 1024
local HARD_MAX_BYTES = 8 * 1024 * 1024 -- truncate past this when rotation is impossible
local MAX_PENDING = 20000         -- lines waiting for Redis; older ones are dropped (they expire)
local BATCH = 200                 -- releases per pipeline (one round trip)
local RETRY_S = 0.5               -- after a Redis failure
local ADMIN_RETRY_S = 30          -- after a failed reopen request
local REOPEN_WAIT_S = 10          -- give up waiting for Envoy's reopen after this
local MAX_LINE = 512

local function log(msg)
  io.stdout:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " lease-log: ", msg, "\n")
  io.stdout:flush()
end

-- A line as the access log writes it, or nil. Values are checked before they become
-- key names, although only the filter writes them (the access log is not client input,
-- but a key name must never rest on that).
local function parse(line)
  if #line > MAX_LINE then return nil end
  local id, pod = line:match("^lease (%S+) (%S+)$")
  if id and keys.valid_connection_id(id) and hosts.valid_pod(pod) then return id, pod end
  return nil
end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

local function truncate(p)
  local ffi = require("ffi")
  pcall(ffi.cdef, "int truncate(const char *path, long length);")
  return ffi.C.truncate(p, 0) == 0
end

-- POST /reopen_logs to Envoy's admin; true when it answered 200.
local function reopen_logs(admin)
  local host, port = (admin or ""):match("^([%w%.%-]+):(%d+)$")
  if not host then return false, "WS_ENVOY_ADMIN is not set to host:port" end
  local c = socket.tcp()
  c:settimeout(1)
  local ok, err = c:connect(host, tonumber(port))
  if not ok then c:close() return false, err end
  c:send("POST /reopen_logs HTTP/1.1\r\nHost: " .. host .. "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
  local status = c:receive("*l")
  c:close()
  if status and status:match("^HTTP/1%.%d 200") then return true end
  return false, status or "no answer"
end

-- The follower's state: the file being read and where, the queue of lines waiting for
-- Redis, the counts. `current` is the file being read: leases.log, or leases.log.old while
-- rotating (and first, when an earlier run stopped in the middle of a rotation).
local function new_state(S, paths, calls, client)
  local st = {
    S = S, calls = calls, client = client, paths = paths,
    current = paths.log, offset = 0, rest = "",
    rotating_since = exists(paths.old) and socket.gettime() or nil,
    admin_retry_at = 0,
    pending = {}, head = 1, tail = 0, -- the queue: pending[head .. tail]
    released = 0, bad = 0, dropped = 0, reported_dropped = 0, last_err = nil, last_beat = 0,
  }
  if st.rotating_since then st.current = paths.old end
  return st
end

-- The sidecar's heartbeat (its liveness probe reads it), at most once a second.
local function heartbeat(st)
  local now = os.time()
  if now == st.last_beat then return end
  st.last_beat = now
  local a = io.open(st.paths.alive, "wb")
  if a then a:write(now, "\n") a:close() end
end

-- Queues one line's lease (a full queue drops its oldest: that lease expires by itself).
local function queue(st, line)
  local id, pod = parse(line)
  if not id then
    if line ~= "" then st.bad = st.bad + 1 end
    return
  end
  st.tail = st.tail + 1
  st.pending[st.tail] = { id, pod }
  if st.tail - st.head + 1 > MAX_PENDING then
    st.pending[st.head] = nil
    st.head = st.head + 1
    st.dropped = st.dropped + 1
  end
end

-- Reads at most READ_MAX new bytes of the current file; true when it reached the end.
local function read_some(st)
  local f = io.open(st.current, "rb")
  if not f then return true end
  local size = f:seek("end")
  -- Shorter than what was read: truncated by someone else (noticed only while it is
  -- shorter; this program is the only one meant to shorten it).
  if size < st.offset then st.offset, st.rest = 0, "" end
  local n = math.min(size - st.offset, READ_MAX)
  if n > 0 then
    f:seek("set", st.offset)
    local data = f:read(n) or ""
    st.offset = st.offset + #data
    data = st.rest .. data
    local last = 1
    for line, e in data:gmatch("([^\n]*)\n()") do
      last = e
      queue(st, line)
    end
    st.rest = data:sub(last)
    if #st.rest > MAX_LINE then st.rest = "" end
  end
  f:close()
  return st.offset >= size
end

-- One pipeline of releases; false after a failure (Redis down or an error reply).
local function release_batch(st)
  local entries, ids = {}, {}
  for i = st.head, math.min(st.head + BATCH - 1, st.tail) do
    local id, pod = st.pending[i][1], st.pending[i][2]
    entries[#entries + 1] = st.calls.release(id, pod)
    ids[#ids + 1] = #entries
    if st.S.connection_inventory then entries[#entries + 1] = st.calls.inventory_delete(id) end
  end
  local replies, err = st.client:run(entries)
  if replies then
    for i = 1, #replies do
      if resp.is_error(replies[i]) then replies, err = nil, replies[i].err break end
    end
  end
  if not replies then
    if err ~= st.last_err then
      log("Redis unavailable (" .. tostring(err) .. "); keeping " .. (st.tail - st.head + 1) .. " lines, retrying")
    end
    st.last_err = err
    return false
  end
  if st.last_err then log("Redis reachable again") end
  st.last_err = nil
  for _, i in ipairs(ids) do
    if replies[i] == 1 then st.released = st.released + 1 end
  end
  for i = st.head, st.head + #ids - 1 do st.pending[i] = nil end
  st.head = st.head + #ids
  return true
end

-- Rotation (see the header): finish one that Envoy has switched over, give up on one it
-- never did, start one once the file is read past ROTATE_BYTES, or truncate past
-- HARD_MAX_BYTES when rotating is impossible.
local function rotate(st, at_end, switched, once, admin)
  local paths, now = st.paths, socket.gettime()
  if st.rotating_since and at_end and switched then
    os.remove(paths.old)
    st.current, st.offset, st.rest, st.rotating_since = paths.log, 0, "", nil
  elseif st.rotating_since and at_end and now - st.rotating_since > REOPEN_WAIT_S then
    -- Envoy never reopened: the old file is still the one it writes to.
    os.rename(paths.old, paths.log)
    st.current, st.rotating_since = paths.log, nil
    log("Envoy did not reopen its access logs within " .. REOPEN_WAIT_S .. " s; going on with " .. paths.log)
  elseif not once and not st.rotating_since and at_end and st.offset > ROTATE_BYTES and now >= st.admin_retry_at then
    if os.rename(paths.log, paths.old) then
      local ok, why = reopen_logs(admin)
      if ok then
        st.current, st.rotating_since = paths.old, now
      else
        os.rename(paths.old, paths.log)
        st.admin_retry_at = now + ADMIN_RETRY_S
        log("cannot rotate " .. paths.log .. " (admin " .. tostring(admin) .. ": " .. tostring(why) .. ")")
      end
    end
  end
  if not st.rotating_since and at_end and st.offset > HARD_MAX_BYTES and truncate(paths.log) then
    log("truncated " .. paths.log .. " at " .. st.offset .. " bytes (rotation impossible); lines written meanwhile are lost")
    st.offset, st.rest = 0, ""
  end
end

local function main(argv)
  local once = argv[1] == "--once"
  if argv[1] and not once then
    io.stderr:write("usage: luajit lease_log.lua [--once]\n")
    os.exit(2)
  end
  local S, errs = settings_loader.load(DIR .. "/settings.lua")
  if not S then
    log("FAILED: bad settings: " .. table.concat(errs, "; "))
    os.exit(1)
  end
  local admin = os.getenv("WS_ENVOY_ADMIN")
  local runtime = require("runtime")
  local log_path = runtime.path("lease_log")
  local paths = { log = log_path, old = log_path .. ".old", alive = runtime.path("lease_log_alive") }
  local st = new_state(S, paths, require("admission").new(S), resp.new(settings_loader.redis_options(S, DIR)))
  log("following " .. paths.log .. " (Redis " .. S.redis_host .. ":" .. S.redis_port .. ")")

  while true do
    heartbeat(st)
    -- Seen before this round's read: Envoy has reopened, so it no longer writes to the
    -- old file, and reading it to its end now gets every line it holds.
    local switched = st.rotating_since ~= nil and exists(paths.log)
    local at_end = read_some(st)
    while st.head <= st.tail do
      heartbeat(st)
      if not release_batch(st) then break end
    end
    if st.dropped > st.reported_dropped then
      log(st.dropped - st.reported_dropped .. " lines dropped while Redis was unavailable (their leases expire by themselves)")
      st.reported_dropped = st.dropped
    end
    rotate(st, at_end, switched, once, admin)
    if once and at_end and (st.head > st.tail or st.last_err) then break end
    if at_end or st.last_err then socket.sleep(st.last_err and RETRY_S or POLL_S) end
  end
  log(string.format("released %d leases; %d unreadable lines", st.released, st.bad))
  os.exit(st.last_err and 1 or 0)
end

local ok, err = pcall(main, arg or {})
if not ok then
  log("FAILED: unexpected error: " .. tostring(err))
  os.exit(1)
end
