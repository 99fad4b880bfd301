-- The lease log: Envoy's own record of the WebSocket streams it carries, written by the
-- public listener's access log (envoy/bootstrap.ts, leaseLog) for every stream whose lease
-- the filter holds (`ws.admission:lease` = "held"), one line per entry:
--
--   <type> <connection id> <pod> <registered> <status> <flags> <upstream host> <start ms> <duration ms>
--
-- <type> is Envoy's %ACCESS_LOG_TYPE%: DownstreamTunnelSuccessfullyEstablished (the 101),
-- DownstreamPeriodic (every renew_interval_ms while the stream is open, on every worker:
-- `access_log_flush_interval`) and DownstreamEnd (the end, resets included). Missing
-- values are "-". This module parses lines and follows the file, rotating it when large.
--
-- Rotation, without losing a line: past ROTATE_BYTES the file is renamed to leases.log.old
-- and Envoy asked to reopen its access logs (admin POST /reopen_logs); Envoy appends to the
-- old file until its flush thread reopens, then creates a new leases.log. Once that exists
-- the old file is read to its end and deleted. If the admin cannot be reached the name is
-- put back, and only past HARD_MAX_BYTES is the file truncated (losing what Envoy writes in
-- between: those streams' next periodic entries put them back).
local keys = require("keys")
local hosts = require("hosts")
local admin_http = require("admin_http")

local M = {}

local READ_MAX = 256 * 1024       -- bytes read per round (memory stays bounded)
local ROTATE_BYTES = tonumber(os.getenv("WS_LEASE_LOG_ROTATE_BYTES") or "") or 1024 * 1024
local HARD_MAX_BYTES = 8 * 1024 * 1024
local ADMIN_RETRY_S = 30          -- after a failed reopen request
local REOPEN_WAIT_S = 10          -- give up waiting for Envoy's reopen after this
local MAX_LINE = 512

M.TYPES = {
  DownstreamTunnelSuccessfullyEstablished = "open",
  DownstreamPeriodic = "periodic",
  DownstreamEnd = "end",
}

local function pod_or_nil(v) return hosts.valid_pod(v) and v or nil end

--- A line as Envoy writes it, or nil. Values are checked before they can reach a key name
-- or a lease member, although only the filter and Envoy write them.
function M.parse(line)
  if #line > MAX_LINE then return nil end
  local t, id, pod, reg, status, flags, upstream, start, duration =
    line:match("^(%a+) (%S+) (%S+) ([01-]) (%d+) (%S+) (%S+) (%d+) (%d+)$")
  local kind = t and M.TYPES[t]
  if not kind or not keys.valid_connection_id(id) then return nil end
  return {
    kind = kind, id = id, pod = pod_or_nil(pod), upstream = pod_or_nil(upstream),
    registered = reg == "1", status = tonumber(status), flags = flags,
    at = tonumber(start) + tonumber(duration),
  }
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

local Follower = {}
Follower.__index = Follower

--- path: the lease log; admin: Envoy's admin host:port (for /reopen_logs); log: log(msg).
function M.follower(path, admin, log, clock)
  local old = path .. ".old"
  local f = setmetatable({
    path = path, old = old, admin = admin, log = log, clock = clock,
    current = path, offset = 0, rest = "", bad = 0,
    rotating_since = exists(old) and clock() or nil, admin_retry_at = 0,
  }, Follower)
  -- An earlier run stopped in the middle of a rotation: the old file first.
  if f.rotating_since then f.current = old end
  return f
end

--- Reads at most READ_MAX new bytes of the current file, calling each(record) per line;
-- returns true when it reached the end.
function Follower:read(each)
  local file = io.open(self.current, "rb")
  if not file then return true end
  local size = file:seek("end")
  -- Shorter than what was read: truncated by someone else.
  if size < self.offset then self.offset, self.rest = 0, "" end
  local n = math.min(size - self.offset, READ_MAX)
  if n > 0 then
    file:seek("set", self.offset)
    local data = file:read(n) or ""
    self.offset = self.offset + #data
    data = self.rest .. data
    local last = 1
    for line, e in data:gmatch("([^\n]*)\n()") do
      last = e
      local rec = M.parse(line)
      if rec then each(rec) elseif line ~= "" then self.bad = self.bad + 1 end
    end
    self.rest = data:sub(last)
    if #self.rest > MAX_LINE then self.rest = "" end
  end
  file:close()
  return self.offset >= size
end

--- True once Envoy reopened (a rotation under way sees the new file).
function Follower:switched()
  return self.rotating_since ~= nil and exists(self.path)
end

--- Rotation steps (see the header), called after a read: finish one Envoy has switched
-- over (`switched` seen before that read), give up on one it never did, or start one.
function Follower:rotate(at_end, switched)
  local now = self.clock()
  if self.rotating_since and at_end and switched then
    os.remove(self.old)
    self.current, self.offset, self.rest, self.rotating_since = self.path, 0, "", nil
  elseif self.rotating_since and at_end and now - self.rotating_since > REOPEN_WAIT_S then
    os.rename(self.old, self.path)
    self.current, self.rotating_since = self.path, nil
    self.log("Envoy did not reopen its access logs within " .. REOPEN_WAIT_S .. " s; going on with " .. self.path)
  elseif not self.rotating_since and at_end and self.offset > ROTATE_BYTES and now >= self.admin_retry_at then
    if os.rename(self.path, self.old) then
      local status, err = admin_http.request(self.admin, "POST", "/reopen_logs")
      if status == 200 then
        self.current, self.rotating_since = self.old, now
      else
        os.rename(self.old, self.path)
        self.admin_retry_at = now + ADMIN_RETRY_S
        self.log("cannot rotate " .. self.path .. " (admin " .. tostring(self.admin) .. ": " .. tostring(err or status) .. ")")
      end
    end
  end
  if not self.rotating_since and at_end and self.offset > HARD_MAX_BYTES and truncate(self.path) then
    self.log("truncated " .. self.path .. " at " .. self.offset
      .. " bytes (rotation impossible); open streams come back with their next periodic entry")
    self.offset, self.rest = 0, ""
  end
end

return M
