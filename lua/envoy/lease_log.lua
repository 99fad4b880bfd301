-- lease_log.lua: releases the leases of WebSocket streams that ended without the filter
-- seeing their close handshake (client or backend dropped the connection, idle timeout,
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
-- Reads settings.lua (WS_LUA_DIR) like the filter; the file is $WS_STATE_DIR/leases.log.
-- Every second it writes the time to $WS_STATE_DIR/lease-log.alive (liveness probe).
-- Releasing twice is harmless (release.lua answers 0 for a lease already gone), so the
-- program starts from the top of the file and keeps no offset across restarts. It keeps
-- the file small by truncating it once it has read past MAX_BYTES (Envoy appends with
-- O_APPEND, so writes land at the new end); a line Envoy writes between the last read and
-- the truncation is lost, and that lease expires by itself within the lease TTL.
local DIR = os.getenv("WS_LUA_DIR") or "/etc/envoy/lua"
package.path = DIR .. "/?.lua;" .. package.path

local settings_loader = require("settings_loader")
local hosts = require("hosts")
local resp = require("resp")
local socket = require("socket")

local POLL_S = 0.05          -- how often the file is checked for new lines
local MAX_BYTES = 1024 * 1024 -- truncate the file once read past this
local BATCH = 200            -- releases per pipeline (one round trip)
local RETRY_S = 0.5          -- after a Redis failure
local MAX_LINE = 512

local function log(msg)
  io.stdout:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " lease-log: ", msg, "\n")
  io.stdout:flush()
end

local function valid_conn_id(id)
  return #id <= 200 and id:match("^[a-z0-9.-]+|%x+|%d+|%x+$") ~= nil
end

-- A line as the access log writes it, or nil. Values are checked before they become
-- key names, although only the filter writes them (the access log is not client input,
-- but a key name must never rest on that).
local function parse(line)
  if #line > MAX_LINE then return nil end
  local id, pod = line:match("^lease (%S+) (%S+)$")
  if id and valid_conn_id(id) and hosts.valid_pod(pod) then return id, pod end
  return nil
end

local function truncate(path)
  local ffi = require("ffi")
  pcall(ffi.cdef, "int truncate(const char *path, long length);")
  return ffi.C.truncate(path, 0) == 0
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
  local state_dir = os.getenv("WS_STATE_DIR") or "/var/run/ws-admission"
  local path = state_dir .. "/leases.log"
  -- The sidecar's liveness probe reads this: the loop below ran within the last seconds.
  local alive_path = state_dir .. "/lease-log.alive"
  local last_beat = 0
  local TAG = "{" .. S.hash_tag .. "}"
  local K_STATS, K_PODS, K_POD = TAG .. ":stats", TAG .. ":pods", TAG .. ":pod:"
  local client = resp.new(settings_loader.redis_options(S, DIR))
  log("following " .. path .. " (Redis " .. S.redis_host .. ":" .. S.redis_port .. ")")

  local offset, pending, rest = 0, {}, ""
  local released, bad, last_err = 0, 0, nil
  while true do
    local now = os.time()
    if now ~= last_beat then
      last_beat = now
      local a = io.open(alive_path, "wb")
      if a then a:write(now, "\n") a:close() end
    end
    local f = io.open(path, "rb")
    if f then
      local size = f:seek("end")
      -- Shorter than what was read: truncated by someone else (only noticed while it is
      -- shorter; this program is the only one meant to truncate it).
      if size < offset then offset, rest = 0, "" end
      if size > offset then
        f:seek("set", offset)
        local data = f:read(size - offset) or ""
        offset = offset + #data
        data = rest .. data
        local last = 1
        for line, e in data:gmatch("([^\n]*)\n()") do
          last = e
          local id, pod = parse(line)
          if id then pending[#pending + 1] = { id, pod } elseif line ~= "" then bad = bad + 1 end
        end
        rest = data:sub(last)
        if #rest > MAX_LINE then rest = "" end
      end
      f:close()
    end
    while #pending > 0 do
      local entries = {}
      for i = 1, math.min(BATCH, #pending) do
        local id, pod = pending[i][1], pending[i][2]
        entries[i] = { script = "release", keys = { K_POD .. pod, K_STATS, K_PODS }, args = { id, pod } }
      end
      local replies, err = client:run(entries)
      if not replies then
        if err ~= last_err then log("Redis unavailable (" .. tostring(err) .. "); retrying") end
        last_err = err
        break
      end
      if last_err then log("Redis reachable again") end
      last_err = nil
      for i = 1, #entries do
        if replies[i] == 1 then released = released + 1 end
        if resp.is_error(replies[i]) then log("release.lua: " .. replies[i].err) end
      end
      local left = {}
      for i = #entries + 1, #pending do left[#left + 1] = pending[i] end
      pending = left
    end
    if #pending == 0 and rest == "" and offset > MAX_BYTES then
      if truncate(path) then offset = 0 end
    end
    if once and #pending == 0 then break end
    if once and last_err then break end
    socket.sleep(last_err and RETRY_S or POLL_S)
  end
  log(string.format("released %d leases; %d unreadable lines", released, bad))
  os.exit(last_err and 1 or 0)
end

local ok, err = pcall(main, arg or {})
if not ok then
  log("FAILED: unexpected error: " .. tostring(err))
  os.exit(1)
end
