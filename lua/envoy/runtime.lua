-- The process environment the pod's Lua programs share (the public filter, the metrics
-- filter, the preStop drain, the agent sidecar): the state directory and the names of the
-- files in it, and the wall clock. One home for each, so the writer of a file and its
-- readers cannot disagree.
local M = {}

--- The pod's emptyDir shared by Envoy and the sidecar (constructs/envoy.ts sets it).
M.STATE_DIR = os.getenv("WS_STATE_DIR") or "/var/run/ws-admission"

--- Files under STATE_DIR.
M.FILES = {
  draining = "draining",           -- the drain marker (drain.lua writes, the agent reads)
  lease_log = "leases.log",        -- Envoy's lease log (envoy/bootstrap.ts; the agent reads it)
  agent_alive = "agent.alive",     -- the agent's heartbeat (its liveness probe, ready.lua)
  snapshot = "metrics.snapshot",   -- the Redis-held metrics (the agent writes, metrics.lua reads)
}

function M.path(name) return M.STATE_DIR .. "/" .. M.FILES[name] end

local socket_ok, socket = pcall(require, "socket")

--- Wall clock in ms: gettimeofday through luasocket, else os.time() (whole seconds). The
-- writers of the state files and their readers stamp and compare with it.
local function wall_ms()
  if socket_ok then return socket.gettime() * 1000 end
  return os.time() * 1000
end
local clock = wall_ms

function M.now_ms() return clock() end

--- Replaces the clock (tests drive time instead of sleeping); nil restores the wall clock.
function M.set_clock(fn) clock = fn or wall_ms end

return M
