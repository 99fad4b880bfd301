-- This proxy's healthy hosts in Redis: the backend cluster's hosts whose health Envoy
-- reports as exactly `healthy` (admin /clusters, hosts.lua), kept as the bits of this
-- proxy's slot in `reach` (ws_hosts). Only changes are sent: a host list change costs
-- Redis O(hosts changed), never O(fleet). A new slot (agent start, a slot lost after the
-- agent could not beat for 30 s, a Redis state loss) is filled, then committed: admissions
-- of this proxy see the old set or the new one, never half of it.
--
-- /clusters is ~18 lines per host, rendered by Envoy's main thread, so it is read only
-- when the cluster's health stats say something changed (a host came or went, a health
-- check failed, an ejection, the healthy count moved), and every FULL_READ_S seconds
-- regardless. Every transition of a host to unhealthy moves a failure or ejection counter
-- or the membership; every transition to healthy moves the healthy count unless another
-- host failed at the same time (which moves a counter).
local admin_http = require("admin_http")
local hosts = require("hosts")

local M = {}

local BATCH = 1000 -- pods per ws_hosts call (the library's bound)
local FULL_READ_S = 10 -- /clusters at least this often, whatever the stats say

-- Envoy's admin /stats?filter=<RE2>, percent-encoded: the backend cluster's membership and
-- health stats (one "name: value" line each).
local function stats_path(cluster)
  local re = "^cluster\\." .. cluster:gsub("%W", "\\%0") .. "\\.(membership_(change|healthy|degraded|excluded|total)"
    .. "|health_check\\.(failure|network_failure|passive_failure|healthy|degraded)"
    .. "|outlier_detection\\.ejections_(active|enforced_total))$"
  return "/stats?filter=" .. re:gsub("[^%w]", function(ch) return string.format("%%%02X", ch:byte()) end)
end

local Registry = {}
Registry.__index = Registry

function M.new(S, proxy, calls, admin, log)
  return setmetatable({
    S = S, proxy = proxy, calls = calls, admin = admin, log = log,
    slot = nil, reported = {}, size = 0, rejected_logged = false,
    stats_path = stats_path(S.backend_cluster), signature = nil, read_at = -math.huge,
  }, Registry)
end

--- Envoy's healthy hosts of the backend cluster: a list, false when its stats show no change
-- since the last read less than FULL_READ_S ago (`now`: seconds; without it, always read),
-- or nil + error.
function Registry:healthy(now)
  local sstatus, stats = admin_http.request(self.admin, "GET", self.stats_path)
  local signature = sstatus == 200 and stats or nil
  if now and signature and signature == self.signature and now - self.read_at < FULL_READ_S then return false end
  local status, body = admin_http.request(self.admin, "GET", "/clusters")
  if status ~= 200 then return nil, "admin /clusters: " .. tostring(status and ("HTTP " .. status) or body) end
  -- The stats are read before the page: a change between the two is seen at the next poll.
  self.signature, self.read_at = signature, now or -math.huge
  local list, rejected = hosts.parse_clusters(body, self.S.backend_cluster)
  if rejected > 0 and not self.rejected_logged then
    self.rejected_logged = true
    self.log("ignored " .. rejected .. " host(s) of cluster " .. self.S.backend_cluster .. " that are not ip:port")
  end
  return list
end

--- The slot is gone (Redis said SLOT, or lost its state): the next sync registers anew.
function Registry:reset()
  self.slot, self.reported, self.size, self.signature = nil, {}, 0, nil
end

local function call_in_batches(self, run, mode, slot, pods)
  for i = 1, #pods, BATCH do
    local batch = {}
    for j = i, math.min(i + BATCH - 1, #pods) do batch[#batch + 1] = pods[j] end
    local r, err = run({ self.calls.hosts(mode, self.proxy, slot, batch) })
    if not r then return nil, err end
    if r[1][1] == "SLOT" then return nil, "slot lost" end
  end
  return true
end

-- A fresh slot with every host of `list`, committed last.
function Registry:register(list, run)
  local r, err = run({ self.calls.hosts("claim", self.proxy) })
  if not r then return nil, err end
  local slot = tonumber(r[1])
  local ok, berr = call_in_batches(self, run, "add", slot, list)
  if not ok then return nil, berr end
  r, err = run({ self.calls.hosts("commit", self.proxy, slot) })
  if not r then return nil, err end
  if r[1][1] ~= "OK" then return nil, "slot lost before commit" end
  self.slot, self.reported, self.size = slot, {}, #list
  for _, p in ipairs(list) do self.reported[p] = true end
  self.log("registered " .. #list .. " healthy host(s) of cluster " .. self.S.backend_cluster .. " as slot " .. slot)
  return true
end

local function sync(self, list, run)
  if not self.slot then return self:register(list, run) end
  local want, adds, removes = {}, {}, {}
  for _, p in ipairs(list) do
    want[p] = true
    if not self.reported[p] then adds[#adds + 1] = p end
  end
  for p in pairs(self.reported) do
    if not want[p] then removes[#removes + 1] = p end
  end
  if #adds == 0 and #removes == 0 then return true end
  local ok, err = call_in_batches(self, run, "add", self.slot, adds)
  if ok then ok, err = call_in_batches(self, run, "remove", self.slot, removes) end
  if not ok then
    if err == "slot lost" then
      self:reset()
      return self:register(list, run)
    end
    return nil, err
  end
  for _, p in ipairs(adds) do self.reported[p] = true end
  for _, p in ipairs(removes) do self.reported[p] = nil end
  self.size = #list
  return true
end

--- Brings Redis's record of this proxy's hosts to `list`. Returns true, or nil + error (and
-- the next poll reads /clusters again, changed or not).
function Registry:sync(list, run)
  local ok, err = sync(self, list, run)
  if not ok then self.signature = nil end
  return ok, err
end

return M
