-- The drain marker ($WS_STATE_DIR/draining): written by drain.lua (the preStop hook)
-- before it releases this proxy's leases, with the time it did (ms) and the proxy id. A
-- connection that renews after that must not re-register, or it would hold its slot for
-- a whole lease TTL after the SIGTERM that resets it.
local runtime = require("runtime")

local M = {}

--- How long a marker counts (ms): SIGTERM follows a drain within seconds; a drain run by
-- hand on a serving pod stops re-registration for no longer than this.
M.MAX_AGE_MS = tonumber(os.getenv("WS_DRAIN_MARKER_MS") or "") or 120000 -- (the tests shorten it)

--- Writes the marker. Returns true, or nil and the error.
function M.write(now_ms, proxy)
  local f, err = io.open(runtime.path("draining"), "wb")
  if not f then return nil, err end
  f:write(string.format("%d\n%s\n", math.floor(now_ms), proxy))
  f:close()
  return true
end

--- True when a marker was written after `since_ms` (this worker's load time: one left by
-- an earlier container of the pod, e.g. after a liveness restart, is not about this
-- process), not in the future, and less than MAX_AGE_MS ago.
function M.active(since_ms)
  local f = io.open(runtime.path("draining"), "rb")
  if not f then return false end
  local at = tonumber((f:read(32) or ""):match("^(%d+)\n"))
  f:close()
  local now = runtime.now_ms()
  return at ~= nil and at >= since_ms and at <= now and now - at < M.MAX_AGE_MS
end

return M
