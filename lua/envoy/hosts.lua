-- Backend host list from Envoy's admin `/clusters` (plain text), and pod id checks. The
-- agent (lua/cli/agent.lua) reads the list; every Lua program checks pod ids with valid_pod.
--
-- Why the text format and not `?format=json`: no JSON library is in the Envoy image
-- (docs/filter.md), and the text output is one fact per line,
--   <cluster>::<ip>:<port>::health_flags::<flags>
-- where <flags> is exactly `healthy` for a healthy host, otherwise one or more of
-- `/failed_active_hc`, `/failed_eds_health`, `/failed_outlier_check`, ...
-- (https://www.envoyproxy.io/docs/envoy/latest/operations/admin, "/clusters",
-- "Host health status"). Only hosts whose flags are exactly `healthy` are candidates.
local M = {}

local MAX_POD_ID = 47 -- "[" + 39 (IPv6) + "]:" + 5

--- True when `s` is an `ip:port` pod id we accept in a Redis key: a dotted IPv4
-- address with octets 0-255, or a bracketed IPv6 address, and a port 1-65535.
function M.valid_pod(s)
  if type(s) ~= "string" or #s > MAX_POD_ID or #s < 9 then return false end
  local a, b, c, d, port = s:match("^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?):(%d%d?%d?%d?%d?)$")
  if a then
    for _, o in ipairs({ a, b, c, d }) do
      if tonumber(o) > 255 or (#o > 1 and o:sub(1, 1) == "0") then return false end
    end
  else
    local ip6
    ip6, port = s:match("^%[([%x:]+)%]:(%d%d?%d?%d?%d?)$")
    if not ip6 or #ip6 < 2 or not ip6:find(":") then return false end
    -- at most one "::", groups of 1-4 hex digits, 8 groups at most
    local _, dbl = ip6:gsub("::", "")
    if dbl > 1 or ip6:find(":::") then return false end
    local groups = 0
    for g in ip6:gmatch("[^:]+") do
      if #g > 4 then return false end
      groups = groups + 1
    end
    if groups > 8 or (dbl == 0 and groups ~= 8) then return false end
  end
  if port:sub(1, 1) == "0" then return false end
  local p = tonumber(port)
  return p >= 1 and p <= 65535
end

--- Parses the admin `/clusters` text body. Returns the list of healthy `ip:port` of
-- `cluster`, in the order Envoy lists them, each checked by valid_pod (anything else
-- is skipped and counted in the second return value).
function M.parse_clusters(body, cluster)
  local prefix = cluster .. "::"
  local healthy, rejected = {}, 0
  local seen = {}
  for line in body:gmatch("[^\n]+") do
    if line:sub(1, #prefix) == prefix then
      local addr, flags = line:sub(#prefix + 1):match("^(.-)::health_flags::(.*)$")
      if addr then
        flags = flags:gsub("%s+$", "")
        if flags == "healthy" then
          if M.valid_pod(addr) then
            if not seen[addr] then
              seen[addr] = true
              healthy[#healthy + 1] = addr
            end
          else
            rejected = rejected + 1
          end
        end
      end
    end
  end
  return healthy, rejected
end

return M
