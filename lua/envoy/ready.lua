-- GET /ready on the metrics listener (kubelet readiness/liveness probes, NLB health
-- checks), answered from the metrics filter (metrics.lua): admin's own /ready, status and
-- body as admin gives them (readiness stays Envoy's), and on the way the healthy hosts of
-- the backend cluster (admin /clusters) are written to the host list file, which the
-- public filter's workers read instead of calling the admin on the request path
-- (hosts.lua, "The host list file"; docs/filter.md). Redis is not involved.
local hosts = require("hosts")
local runtime = require("runtime")

local M = {}

M.PATH = "/ready"
-- Admin calls of a probe (kubelet timeoutSeconds 2): /ready first, then /clusters.
local ADMIN_READY_TIMEOUT_MS = 1000
local ADMIN_CLUSTERS_TIMEOUT_MS = 500

-- A temporary file name private to this worker (the metrics listener has a Lua state per
-- worker too, and two probes may refresh at once on two workers).
local function token()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4)
  if f then f:close() end
  if not b or #b < 4 then return string.format("%08x", math.random(0, 0x7fffffff)) end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- S: the settings, or nil when they were refused (the probe still answers from the
-- admin, named as the stack names it, and writes no host list).
function M.new(S)
  local admin_cluster = (S and S.admin_cluster) or "envoy_admin"
  local file = runtime.path("hosts")
  local tmp = file .. "." .. token() .. ".tmp"
  -- The writer's clock is the readers' (host_source.lua): runtime.now_ms, in whole ms.
  local function now_ms() return math.floor(runtime.now_ms()) end
  local probe = {}

  -- Refreshes the host list file from the admin host list, unless any worker wrote it
  -- less than hosts_cache_ms ago (probes from kubelet and every NLB node need not each
  -- cost an admin call). Only a successful /clusters answer is written: on failure the
  -- file ages, and past its bound the public filter falls back to its own admin calls.
  function probe.refresh_hosts(h)
    if not S then return end
    local now = now_ms()
    local _, written_ms = hosts.read_file(file, S.backend_cluster)
    if type(written_ms) == "number" and now - written_ms >= 0 and now - written_ms < S.hosts_cache_ms then
      return
    end
    local ok, rh, body = pcall(h.httpCall, h, admin_cluster, {
      [":method"] = "GET", [":path"] = "/clusters", [":authority"] = admin_cluster,
    }, nil, ADMIN_CLUSTERS_TIMEOUT_MS)
    if not (ok and type(rh) == "table" and rh[":status"] == "200" and type(body) == "string") then
      h:logWarn("ws-admission metrics: admin host list unavailable ("
        .. (ok and tostring(type(rh) == "table" and rh[":status"]) or tostring(rh)) .. "); " .. file .. " not refreshed")
      return
    end
    local list, rejected = hosts.parse_clusters(body, S.backend_cluster)
    if rejected > 0 then
      h:logWarn("ws-admission metrics: ignored " .. rejected .. " host(s) of cluster " .. S.backend_cluster
        .. " that are not ip:port")
    end
    local wok, werr = hosts.write_file(file, tmp, hosts.format_file(list, S.backend_cluster, now_ms()))
    if not wok then h:logWarn("ws-admission metrics: cannot write " .. file .. ": " .. tostring(werr)) end
  end

  -- GET/HEAD /ready: admin's /ready, mirrored (200 "LIVE", 503 "PRE_INITIALIZING",
  -- "INITIALIZING", "DRAINING"), after the host list refresh.
  function probe.respond(h, head)
    local ok, rh, body = pcall(h.httpCall, h, admin_cluster, {
      [":method"] = "GET", [":path"] = M.PATH, [":authority"] = admin_cluster,
    }, nil, ADMIN_READY_TIMEOUT_MS)
    local status = ok and type(rh) == "table" and tonumber(rh[":status"])
    if not status or status < 200 or status > 599 or status % 1 ~= 0 then
      -- Admin unreachable (Envoy's httpCall gives a 503 "upstream failure" then) or nonsense.
      if not ok then h:logWarn("ws-admission metrics: admin /ready call failed: " .. tostring(rh)) end
      return h:respond({ [":status"] = "503", ["content-type"] = "text/plain" }, head and "" or "admin unavailable\n")
    end
    -- Whatever admin's state: the list is what the public filter would fetch itself now.
    probe.refresh_hosts(h)
    local headers = { [":status"] = string.format("%d", status) }
    headers["content-type"] = type(rh["content-type"]) == "string" and rh["content-type"] or "text/plain"
    headers["cache-control"] = "no-cache, max-age=0"
    return h:respond(headers, (head or type(body) ~= "string") and "" or body)
  end

  return probe
end

return M
