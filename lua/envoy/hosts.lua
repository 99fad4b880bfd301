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
--
-- The page has ~18 lines per host and only one of them matters, so this jumps from one
-- `::health_flags::` to the next (a plain search) and reads the line's start backwards,
-- instead of cutting the page into lines. An address longer than MAX_LINE_HEAD is not a
-- pod id and is not read.
local HEALTH = "::health_flags::"
local MAX_LINE_HEAD = 64

function M.parse_clusters(body, cluster)
  local lead = "\n" .. cluster .. "::"
  local healthy, rejected, seen = {}, 0, {}
  local pos = 1
  while true do
    local s, e = body:find(HEALTH, pos, true)
    if not s then break end
    local eol = body:find("\n", e + 1, true) or (#body + 1)
    -- The start of this line: the last "\n<cluster>::" shortly before (a page starts as a line).
    local from = math.max(1, s - MAX_LINE_HEAD - #lead)
    local head = (from == 1 and "\n" or "") .. body:sub(from, s - 1)
    local at, nxt = nil, head:find(lead, 1, true)
    while nxt do
      at = nxt
      nxt = head:find(lead, at + 1, true)
    end
    local addr = at and head:sub(at + #lead)
    if addr and not addr:find("\n", 1, true) and body:sub(e + 1, eol - 1):gsub("%s+$", "") == "healthy" then
      if not M.valid_pod(addr) then
        rejected = rejected + 1
      elseif not seen[addr] then
        seen[addr] = true
        healthy[#healthy + 1] = addr
      end
    end
    pos = eol
  end
  return healthy, rejected
end

return M
