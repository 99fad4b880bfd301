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
  local path = runtime.path("lease_log")
  local old_path = path .. ".old"
  local alive_path = runtime.path("lease_log_alive")
  local calls = require("admission").new(S)
  local client = resp.new(settings_loader.redis_options(S, DIR))
  log("following " .. path .. " (Redis " .. S.redis_host .. ":" .. S.redis_port .. ")")

  -- `current` is the file being read: leases.log, or leases.log.old while rotating
  -- (and first, when an earlier run stopped in the middle of a rotation).
  local current, offset, rest = path, 0, ""
  local rotating_since = exists(old_path) and socket.gettime() or nil
  if rotating_since then current = old_path end
  local admin_retry_at = 0
  -- Pending lines, a queue: pending[head .. tail].
  local pending, head, tail = {}, 1, 0
  local released, bad, dropped, last_err = 0, 0, 0, nil
  local last_beat = 0

  local function heartbeat()
    local now = os.time()
    if now == last_beat then return end
    last_beat = now
    local a = io.open(alive_path, "wb")
    if a then a:write(now, "\n") a:close() end
  end

  -- Reads at most READ_MAX new bytes of `current`; true when it reached the end.
  local function read_some()
    local f = io.open(current, "rb")
    if not f then return true end
    local size = f:seek("end")
    -- Shorter than what was read: truncated by someone else (noticed only while it is
    -- shorter; this program is the only one meant to shorten it).
    if size < offset then offset, rest = 0, "" end
    local n = math.min(size - offset, READ_MAX)
    if n > 0 then
      f:seek("set", offset)
      local data = f:read(n) or ""
      offset = offset + #data
      data = rest .. data
      local last = 1
      for line, e in data:gmatch("([^\n]*)\n()") do
        last = e
        local id, pod = parse(line)
        if id then
          tail = tail + 1
          pending[tail] = { id, pod }
          if tail - head + 1 > MAX_PENDING then
            pending[head] = nil
            head = head + 1
            dropped = dropped + 1
          end
        elseif line ~= "" then
          bad = bad + 1
        end
      end
      rest = data:sub(last)
      if #rest > MAX_LINE then rest = "" end
    end
    f:close()
    return offset >= size
  end

  -- One pipeline of releases; false after a failure (Redis down or an error reply).
  local function release_batch()
    local entries, ids = {}, {}
    for i = head, math.min(head + BATCH - 1, tail) do
      local id, pod = pending[i][1], pending[i][2]
      entries[#entries + 1] = calls.release(id, pod)
      ids[#ids + 1] = #entries
      if S.connection_inventory then entries[#entries + 1] = calls.inventory_delete(id) end
    end
    local replies, err = client:run(entries)
    if replies then
      for i = 1, #replies do
        if resp.is_error(replies[i]) then replies, err = nil, replies[i].err break end
      end
    end
    if not replies then
      if err ~= last_err then log("Redis unavailable (" .. tostring(err) .. "); keeping " .. (tail - head + 1) .. " lines, retrying") end
      last_err = err
      return false
    end
    if last_err then log("Redis reachable again") end
    last_err = nil
    for _, i in ipairs(ids) do
      if replies[i] == 1 then released = released + 1 end
    end
    for i = head, head + #ids - 1 do pending[i] = nil end
    head = head + #ids
    return true
  end

  local reported_dropped = 0
  while true do
    heartbeat()
    -- Seen before this round's read: Envoy has reopened, so it no longer writes to the
    -- old file, and reading it to its end now gets every line it holds.
    local switched = rotating_since ~= nil and exists(path)
    local at_end = read_some()
    while head <= tail do
      heartbeat()
      if not release_batch() then break end
    end
    if dropped > reported_dropped then
      log(dropped - reported_dropped .. " lines dropped while Redis was unavailable (their leases expire by themselves)")
      reported_dropped = dropped
    end

    -- Rotation (see the header).
    local now = socket.gettime()
    if rotating_since and at_end and switched then
      os.remove(old_path)
      current, offset, rest, rotating_since = path, 0, "", nil
    elseif rotating_since and at_end and now - rotating_since > REOPEN_WAIT_S then
      -- Envoy never reopened: the old file is still the one it writes to.
      os.rename(old_path, path)
      current, rotating_since = path, nil
      log("Envoy did not reopen its access logs within " .. REOPEN_WAIT_S .. " s; going on with " .. path)
    elseif not once and not rotating_since and at_end and offset > ROTATE_BYTES and now >= admin_retry_at then
      if os.rename(path, old_path) then
        local ok, why = reopen_logs(admin)
        if ok then
          current, rotating_since = old_path, now
        else
          os.rename(old_path, path)
          admin_retry_at = now + ADMIN_RETRY_S
          log("cannot rotate " .. path .. " (admin " .. tostring(admin) .. ": " .. tostring(why) .. ")")
        end
      end
    end
    if not rotating_since and at_end and offset > HARD_MAX_BYTES and truncate(path) then
      log("truncated " .. path .. " at " .. offset .. " bytes (rotation impossible); lines written meanwhile are lost")
      offset, rest = 0, ""
    end

    if once and at_end and (head > tail or last_err) then break end
    if at_end or last_err then socket.sleep(last_err and RETRY_S or POLL_S) end
  end
  log(string.format("released %d leases; %d unreadable lines", released, bad))
  os.exit(last_err and 1 or 0)
end

local ok, err = pcall(main, arg or {})
if not ok then
  log("FAILED: unexpected error: " .. tostring(err))
  os.exit(1)
end
