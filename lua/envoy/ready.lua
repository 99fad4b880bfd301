-- GET /ready and /live on the metrics listener, answered from the metrics filter
-- (metrics.lua). Both mirror admin's own /ready (200 "LIVE"; 503 "PRE_INITIALIZING",
-- "INITIALIZING", "DRAINING"): Envoy's readiness stays Envoy's.
--   /live    (the kubelet's liveness probe): admin's /ready alone. A restart drops every
--            WebSocket of the proxy, so nothing but Envoy itself may fail it.
--   /ready   (the readiness probe, the NLB's health check): also 503 while the agent
--            sidecar is not running (its heartbeat, $WS_STATE_DIR/agent.alive, older than
--            AGENT_STALE_S): this proxy's leases are renewed by the agent, so new clients
--            go to a proxy that keeps its count. Redis is not involved.
local runtime = require("runtime")

local M = {}

M.PATH = "/ready"
M.LIVE_PATH = "/live"
local ADMIN_READY_TIMEOUT_MS = 1000
M.AGENT_STALE_S = 15

-- Seconds since the agent's last heartbeat, or nil when it never wrote one.
local function agent_age()
  local f = io.open(runtime.path("agent_alive"), "rb")
  local t = f and tonumber(f:read("*l") or "")
  if f then f:close() end
  return t and (os.time() - t) or nil
end

--- S: the settings, or nil when they were refused (the probe still answers from the admin,
-- named as the stack names it).
function M.new(S)
  local admin_cluster = (S and S.admin_cluster) or "envoy_admin"
  local probe = {}

  function probe.respond(h, head, live)
    local ok, rh, body = pcall(h.httpCall, h, admin_cluster, {
      [":method"] = "GET", [":path"] = M.PATH, [":authority"] = admin_cluster,
    }, nil, ADMIN_READY_TIMEOUT_MS)
    local status = ok and type(rh) == "table" and tonumber(rh[":status"])
    if not status or status < 200 or status > 599 or status % 1 ~= 0 then
      -- Admin unreachable (Envoy's httpCall gives a 503 "upstream failure" then) or nonsense.
      if not ok then h:logWarn("ws-admission metrics: admin /ready call failed: " .. tostring(rh)) end
      return h:respond({ [":status"] = "503", ["content-type"] = "text/plain" }, head and "" or "admin unavailable\n")
    end
    if not live and status == 200 then
      local age = agent_age()
      if not age or age > M.AGENT_STALE_S then
        return h:respond({ [":status"] = "503", ["content-type"] = "text/plain", ["cache-control"] = "no-cache, max-age=0" },
          head and "" or ("agent not running (heartbeat " .. (age and (age .. " s old") or "missing") .. ")\n"))
      end
    end
    local headers = { [":status"] = string.format("%d", status) }
    headers["content-type"] = type(rh["content-type"]) == "string" and rh["content-type"] or "text/plain"
    headers["cache-control"] = "no-cache, max-age=0"
    return h:respond(headers, (head or type(body) ~= "string") and "" or body)
  end

  return probe
end

return M
