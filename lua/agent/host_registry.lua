-- This proxy's healthy hosts in Redis: the backend cluster's hosts whose health Envoy
-- reports as exactly `healthy` (admin /clusters, hosts.lua), kept as the bits of this
-- proxy's slot in `reach` (ws_hosts). Only changes are sent: a host list change costs
-- Redis O(hosts changed), never O(fleet). A new slot (agent start, a slot lost after the
-- agent could not beat for 30 s, a Redis state loss) is filled, then committed: admissions
-- of this proxy see the old set or the new one, never half of it.
local admin_http = require("admin_http")
local hosts = require("hosts")

local M = {}

local BATCH = 1000 -- pods per ws_hosts call (the library's bound)

local Registry = {}
Registry.__index = Registry

function M.new(S, proxy, calls, admin, log)
  return setmetatable({
    S = S, proxy = proxy, calls = calls, admin = admin, log = log,
    slot = nil, reported = {}, size = 0, rejected_logged = false,
  }, Registry)
end

--- Envoy's healthy hosts of the backend cluster: a list, or nil + error.
function Registry:healthy()
  local status, body = admin_http.request(self.admin, "GET", "/clusters")
  if status ~= 200 then return nil, "admin /clusters: " .. tostring(status and ("HTTP " .. status) or body) end
  local list, rejected = hosts.parse_clusters(body, self.S.backend_cluster)
  if rejected > 0 and not self.rejected_logged then
    self.rejected_logged = true
    self.log("ignored " .. rejected .. " host(s) of cluster " .. self.S.backend_cluster .. " that are not ip:port")
  end
  return list
end

--- The slot is gone (Redis said SLOT, or lost its state): the next sync registers anew.
function Registry:reset()
  self.slot, self.reported, self.size = nil, {}, 0
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

--- Brings Redis's record of this proxy's hosts to `list`. Returns true, or nil + error.
function Registry:sync(list, run)
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

return M
