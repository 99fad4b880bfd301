-- Backend host list from Envoy's admin `/clusters` (plain text), and pod id checks.
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

-------------------------------------------------------------------------------
-- The host list file: `$WS_STATE_DIR/hosts`, written by metrics.lua (the metrics
-- listener's Lua state, refreshed on every GET /ready probe and /metrics scrape) and
-- read by every worker of the public filter, so that in steady state no upgrade waits in
-- an httpCall() for the host list (docs/filter.md, "Host list"). Format, one fact a line:
--   ws-admission-hosts 1
--   written_ms <ms since the epoch, the writer's wall clock>
--   cluster <backend cluster name>
--   host <ip:port>            (zero or more, in Envoy's order)
--   end <number of host lines>
-- The reader trusts nothing in it: the header, cluster and `end` lines must match, and
-- every host is checked by valid_pod again (a bad one is skipped and counted).
-------------------------------------------------------------------------------

M.FILE_MAGIC = "ws-admission-hosts 1"
M.MAX_FILE_BYTES = 1024 * 1024 -- 10000 hosts of 47 characters fit with room to spare

--- The file's text for `list` (already valid pod ids) of `cluster`, written at `written_ms`.
function M.format_file(list, cluster, written_ms)
  local lines = { M.FILE_MAGIC, string.format("written_ms %d", written_ms), "cluster " .. cluster }
  for _, p in ipairs(list) do lines[#lines + 1] = "host " .. p end
  lines[#lines + 1] = "end " .. #list
  return table.concat(lines, "\n") .. "\n"
end

-- The last host lines parsed in this Lua state (one per worker) and their result: the
-- file is rewritten on every probe with a new written_ms, but its host lines rarely
-- change, and parsing them again on each re-read costs the worker time in proportion to the fleet.
local last = { hosts = nil, list = nil, rejected = 0 }

--- Parses the file's text. Returns list, written_ms, rejected; or nil and a reason.
-- Host lines equal to the previous call's give the previous call's list (the same table).
function M.parse_file(text, cluster)
  if type(text) ~= "string" then return nil, "missing" end
  if #text > M.MAX_FILE_BYTES then return nil, "too large" end
  local header = M.FILE_MAGIC .. "\n"
  if text:sub(1, #header) ~= header then return nil, "bad header" end
  local written, rest = text:match("^written_ms (%d+)\n(.*)$", #header + 1)
  if not written or #written > 15 then return nil, "bad written_ms line" end
  local clusterLine = "cluster " .. cluster .. "\n"
  if rest:sub(1, #clusterLine) ~= clusterLine then return nil, "not the host list of cluster " .. cluster end
  local body = rest:sub(#clusterLine + 1)
  if body == last.hosts then return last.list, tonumber(written), last.rejected end
  local lines = {}
  for line in body:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local n = lines[#lines] and lines[#lines]:match("^end (%d+)$")
  if not n or tonumber(n) ~= #lines - 1 then return nil, "truncated" end
  local list, seen, rejected = {}, {}, 0
  for i = 1, #lines - 1 do
    local p = lines[i]:match("^host (.*)$")
    if p and M.valid_pod(p) then
      if not seen[p] then
        seen[p] = true
        list[#list + 1] = p
      end
    else
      rejected = rejected + 1
    end
  end
  last.hosts, last.list, last.rejected = body, list, rejected
  return list, tonumber(written), rejected
end

--- Reads and parses the file at `path` (a small read: no network, no yield).
function M.read_file(path, cluster)
  local f = io.open(path, "rb")
  if not f then return nil, "missing" end
  local text = f:read(M.MAX_FILE_BYTES + 1)
  f:close()
  return M.parse_file(text or "", cluster)
end

--- Replaces the file at `path` atomically: writes `tmp` (a name private to the writer,
-- since several workers of the metrics listener may write at once), then os.rename.
-- Returns true, or nil and an error.
function M.write_file(path, tmp, text)
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, tostring(werr or cerr)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

return M
