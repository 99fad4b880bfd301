-- The candidates of an upgrade: the healthy hosts of the backend cluster, per worker
-- (docs/filter.md, "Host list"), and their host view (keys.view_id) for Redis.
--
-- Steady state: a per-worker cache, refreshed every hosts_cache_ms from the host list file
-- that metrics.lua keeps fresh; no httpCall, so the upgrade stays two-way. Only when the
-- file is missing or stale does the worker fetch the list from the admin itself (the
-- stream becomes one-way, counted in one_way_streams_total).
local hosts = require("hosts")
local keys = require("keys")
local runtime = require("runtime")

local M = {}

-- The file is used while younger than max(FILE_MIN_AGE_MS, 3 x hosts_cache_ms): the kubelet
-- probes GET /ready every 5 s (readiness; liveness every 10 s), so a fresh file is at most
-- ~5 s old and this bound tolerates one missed probe. Older (or missing) -> admin httpCall.
local FILE_MIN_AGE_MS = 10000
-- A file stamped this far in the future is stale too (the wall clock was stepped back).
local FILE_FUTURE_MS = 1000
M.ADMIN_TIMEOUT_MS = 250 -- httpCall to the loopback admin

-- `old` when `new` holds the same pods in the same order, else `new`: an unchanged list
-- keeps its identity, and with it its view id and the capacity cache.
local function same_or(old, new)
  if old == new or not old or #old ~= #new then return new end
  for i = 1, #new do
    if old[i] ~= new[i] then return new end
  end
  return old
end

--- `log(h, kind, level, msg)`: the worker's rate-limited logger.
function M.new(S, log)
  local file = runtime.path("hosts")
  local cache = { list = nil, at = -math.huge, file_ok = nil, fetching_since = nil }
  local view = { list = nil, id = nil, set = nil }
  local src = {}

  -- The list from the file and nil when it is usable, else nil and why not. A small local
  -- read: no network, no yield.
  local function from_file(h, now)
    local list, written_ms, rejected = hosts.read_file(file, S.backend_cluster)
    if not list then return nil, written_ms end
    local age = now - written_ms
    local max_age = math.max(FILE_MIN_AGE_MS, 3 * S.hosts_cache_ms)
    if age > max_age or age < -FILE_FUTURE_MS then
      return nil, string.format("stale (written %d ms ago, limit %d ms)", age, max_age)
    end
    if rejected > 0 then
      log(h, "bad_host_file", "warn", "ws-admission: ignored " .. rejected .. " line(s) of " .. file .. " that are not a valid host")
    end
    return list
  end

  -- The admin's list, after at most ADMIN_TIMEOUT_MS in httpCall() (the script yields).
  local function from_admin(h, now)
    -- One fetch at a time per worker: while one stream waits in httpCall(), Envoy runs the
    -- worker's other streams; those use the previous list rather than fetching (and
    -- yielding, which would make them one-way) too. A fetch whose stream was reset never
    -- resumes, so "in flight" ends after the admin timeout regardless. Before the worker's
    -- first list there is nothing to use meanwhile: those upgrades are refused (503
    -- no_backend, Retry-After 1) rather than each fetching too.
    if cache.fetching_since and now - cache.fetching_since < M.ADMIN_TIMEOUT_MS + 50 then
      if cache.list then return cache.list, false end
      return {}, false, "loading"
    end
    cache.fetching_since = now
    local ok, rh, body = pcall(h.httpCall, h, S.admin_cluster, {
      [":method"] = "GET", [":path"] = "/clusters", [":authority"] = S.admin_cluster,
    }, nil, M.ADMIN_TIMEOUT_MS)
    cache.fetching_since = nil
    now = runtime.now_ms()
    if ok and rh and rh[":status"] == "200" and body then
      local list, rejected = hosts.parse_clusters(body, S.backend_cluster)
      if rejected > 0 then
        log(h, "bad_host", "warn", "ws-admission: ignored " .. rejected .. " host(s) of cluster "
          .. S.backend_cluster .. " that are not ip:port")
      end
      cache.list, cache.at = same_or(cache.list, list), now
      return cache.list, true
    end
    log(h, "admin", "warn", "ws-admission: admin host list unavailable ("
      .. (ok and tostring(rh and rh[":status"]) or tostring(rh)) .. "); using the cached list")
    -- Keep serving the last good list; retry on the next request after a short pause.
    if cache.list then cache.at = now - S.hosts_cache_ms + 200 end
    return cache.list or {}, true
  end

  --- The list; true when this call went to the admin (the script yielded in httpCall());
  -- "loading" third when the worker has no list yet and another stream is fetching it.
  function src.candidates(h)
    local now = runtime.now_ms()
    if cache.list and now - cache.at < S.hosts_cache_ms then return cache.list, false end
    local flist, why = from_file(h, now)
    if flist then
      if cache.file_ok == false then
        h:logInfo("ws-admission: host list file " .. file .. " is fresh again; no more admin calls on the request path")
      end
      cache.file_ok = true
      cache.list, cache.at = same_or(cache.list, flist), now
      return cache.list, false
    end
    if cache.file_ok ~= false then
      -- Logged once per change. Missing is normal until the first probe reached metrics.lua
      -- (and without probes, e.g. outside Kubernetes, it never comes): info, not a warning.
      local msg = "ws-admission: host list file " .. file .. " unusable (" .. tostring(why)
        .. "); fetching the host list from the admin on the request path (those upgrades are one-way)"
      if why == "missing" then h:logInfo(msg) else h:logWarn(msg) end
    end
    cache.file_ok = false
    return from_admin(h, now)
  end

  --- The view of a list: { id = keys.view_id(list), set = pod -> true }, computed once
  -- per list (an unchanged list keeps its table).
  function src.view_of(list)
    if view.list ~= list then
      local set = {}
      for i = 1, #list do set[list[i]] = true end
      view.list, view.id, view.set = list, keys.view_id(list), set
    end
    return view
  end

  return src
end

return M
