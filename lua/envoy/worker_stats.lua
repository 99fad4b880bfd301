-- Per-worker counters that must survive a Redis outage (Redis errors, fail-open
-- admissions, refusals while Redis is unavailable, ...), kept outside Redis.
--
-- Why files: every Lua state is private to one worker thread ("there is no truly global
-- data", https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/lua_filter),
-- and the metrics listener's filter must label each worker's counts. So each worker of the
-- public filter writes its own small file under WS_STATE_DIR (an emptyDir): the failure
-- counters at once, the others at most about once a second; and the metrics filter (its
-- own Lua state) reads them all and labels each series with {proxy, worker}. Files are
-- replaced atomically (write to a temporary name, rename).
--
-- Lua cannot list a directory, so each worker appends its file name once to an index
-- file (`workers.index`, O_APPEND, one short line) that the reader walks.
local M = {}

M.NAMES = {
  "redis_errors_total",
  "fail_open_total",
  "rejected_redis_unavailable_total",
  "rate_limited_cached_total",
  "capacity_cached_total",
  "rejected_recovering_total",
  "rejected_no_backend_total",
}

local Writer = {}
Writer.__index = Writer

--- dir: WS_STATE_DIR; proxy, worker: labels (already checked: [a-z0-9.-], hex);
-- now_ms: clock function; min_interval_ms: at most one write per this interval.
function M.writer(dir, proxy, worker, now_ms, min_interval_ms)
  local w = setmetatable({
    dir = dir, proxy = proxy, worker = worker, now_ms = now_ms,
    min_interval_ms = min_interval_ms or 1000,
    file = proxy .. "." .. worker .. ".counters",
    counts = {}, dirty = false, last_write = -math.huge, registered = false,
    write_errors = 0,
  }, Writer)
  for _, n in ipairs(M.NAMES) do w.counts[n] = 0 end
  return w
end

--- urgent: write now, not up to ~1 s later. For the counters of Redis failures: they
-- must show at the next scrape even if traffic stops, and on that path a file write
-- costs less than the Redis call it replaces. Never for the
-- flood path (rate_limited_cached_total), which must stay free of I/O.
function Writer:inc(name, by, urgent)
  self.counts[name] = (self.counts[name] or 0) + (by or 1)
  self.dirty = true
  self:maybe_flush(urgent)
end

--- Writes the file when something changed and the last write is old enough.
-- Called on every counted event and on other filter activity, so a change is on
-- disk at most ~1 s (or one event) late.
function Writer:maybe_flush(force)
  if not self.dirty then return end
  local now = self.now_ms()
  if not force and now - self.last_write < self.min_interval_ms then return end
  self.last_write = now
  local path = self.dir .. "/" .. self.file
  local tmp = path .. ".tmp"
  local f = io.open(tmp, "wb")
  if not f then
    self.write_errors = self.write_errors + 1
    return
  end
  local lines = { "proxy " .. self.proxy, "worker " .. self.worker }
  for _, n in ipairs(M.NAMES) do lines[#lines + 1] = n .. " " .. string.format("%d", self.counts[n]) end
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  if not os.rename(tmp, path) then
    self.write_errors = self.write_errors + 1
    return
  end
  self.dirty = false
  if not self.registered then
    local idx = io.open(self.dir .. "/workers.index", "ab")
    if idx then
      idx:write(self.file, "\n")
      idx:close()
      self.registered = true
    end
  end
end

--- Reads every worker's counters. Returns a list of { proxy=, worker=, counts={} },
-- sorted by proxy then worker; unreadable or malformed files are skipped.
function M.read_all(dir)
  local out, seen = {}, {}
  local idx = io.open(dir .. "/workers.index", "rb")
  if not idx then return out end
  local names = idx:read("*a") or ""
  idx:close()
  for name in names:gmatch("[^\n]+") do
    if not seen[name] and name:match("^[a-z0-9.-]+%.[0-9a-f]+%.counters$") then
      seen[name] = true
      local f = io.open(dir .. "/" .. name, "rb")
      if f then
        local rec = { counts = {} }
        for line in (f:read("*a") or ""):gmatch("[^\n]+") do
          local k, v = line:match("^(%S+) (%S+)$")
          if k == "proxy" then rec.proxy = v
          elseif k == "worker" then rec.worker = v
          elseif k and tonumber(v) then rec.counts[k] = tonumber(v) end
        end
        f:close()
        if rec.proxy and rec.worker then out[#out + 1] = rec end
      end
    end
  end
  table.sort(out, function(a, b)
    if a.proxy ~= b.proxy then return a.proxy < b.proxy end
    return a.worker < b.worker
  end)
  return out
end

return M
