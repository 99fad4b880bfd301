-- The metrics snapshot file ($WS_STATE_DIR/metrics.snapshot): the Redis-held numbers of the
-- metrics, written by the agent (one ws_snapshot call every metrics_snapshot_ms, whatever
-- the scrape rate) and served by metrics.lua, which thus never calls Redis from an Envoy
-- worker. One fact a line:
--   ws-admission-snapshot 1
--   written_ms <the agent's wall clock>
--   redis_up 1 | redis_up 0 and error <text>
--   window_used <n>
--   stat <counter> <value>       (the stats hash's counters)
--   pod <ip:port> <leases>       (every pod that holds a lease)
--   proxy <proxy id> <leases>
--   gauge <name> <value>         (pods_reachable, pods_penalised, proxies_live, recovering,
--                                clients_tracked)
--   end
-- The reader trusts nothing in it: the header and `end` must be there, names and pods are
-- checked, and a file older than its bound is treated as Redis unavailable.
local hosts = require("hosts")

local M = {}

local HEADER = "ws-admission-snapshot 1"
M.MAX_PODS = 10000

local function name_ok(v) return v:match("^[%w_.-]+$") ~= nil and #v <= 253 end

--- The text of a snapshot: snap = { now_ms, redis_up, error, window_used, stats = {name -> n},
-- pods = {{pod, n}}, proxies = {{proxy, n}}, gauges = {name -> n} }.
function M.format(snap, written_ms)
  local out = { HEADER, string.format("written_ms %d", written_ms) }
  if not snap.redis_up then
    out[#out + 1] = "redis_up 0"
    out[#out + 1] = "error " .. tostring(snap.error or "unknown"):gsub("[%c]", " "):sub(1, 300)
  else
    out[#out + 1] = "redis_up 1"
    out[#out + 1] = string.format("window_used %d", snap.window_used)
    for name, v in pairs(snap.stats) do out[#out + 1] = string.format("stat %s %d", name, v) end
    for i = 1, math.min(#snap.pods, M.MAX_PODS) do out[#out + 1] = string.format("pod %s %d", snap.pods[i][1], snap.pods[i][2]) end
    for _, p in ipairs(snap.proxies) do out[#out + 1] = string.format("proxy %s %d", p[1], p[2]) end
    for name, v in pairs(snap.gauges) do out[#out + 1] = string.format("gauge %s %d", name, v) end
  end
  out[#out + 1] = "end"
  return table.concat(out, "\n") .. "\n"
end

--- Writes atomically (a temporary file, then rename). Returns true, or nil + error.
function M.write(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then return nil, rerr end
  return true
end

--- Reads a snapshot no older than max_age_ms at now_ms. Returns the snapshot (as format
-- takes it, pods and proxies sorted), or nil + why (missing, malformed, stale, or the
-- agent's own "Redis unavailable" with its error).
function M.read(path, now_ms, max_age_ms)
  local f = io.open(path, "rb")
  if not f then return nil, "no snapshot yet (" .. path .. ")" end
  local text = f:read(4 * 1024 * 1024) or ""
  f:close()
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  if lines[1] ~= HEADER or lines[#lines] ~= "end" then return nil, "malformed snapshot " .. path end
  local written = tonumber((lines[2] or ""):match("^written_ms (%d+)$"))
  if not written then return nil, "malformed snapshot " .. path end
  local age = now_ms - written
  if age > max_age_ms or age < -5000 then
    return nil, string.format("snapshot %d ms old (the agent writes one every few seconds; is it running?)", age)
  end
  if lines[3] ~= "redis_up 1" then return nil, (lines[4] or ""):match("^error (.*)$") or "Redis unavailable" end
  local snap = { redis_up = true, written_ms = written, window_used = 0, stats = {}, pods = {}, proxies = {}, gauges = {} }
  for i = 4, #lines - 1 do
    local k, a, b = lines[i]:match("^(%a[%a_]*) (%S+) ?(%S*)$")
    local n = tonumber(b)
    if k == "window_used" then snap.window_used = tonumber(a) or 0
    elseif k == "stat" and n and name_ok(a) then snap.stats[a] = n
    elseif k == "pod" and n and hosts.valid_pod(a) and #snap.pods < M.MAX_PODS then snap.pods[#snap.pods + 1] = { a, n }
    elseif k == "proxy" and n and name_ok(a) then snap.proxies[#snap.proxies + 1] = { a, n }
    elseif k == "gauge" and n and name_ok(a) then snap.gauges[a] = n end
  end
  table.sort(snap.pods, function(x, y) return x[1] < y[1] end)
  table.sort(snap.proxies, function(x, y) return x[1] < y[1] end)
  return snap
end

return M
