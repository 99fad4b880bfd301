-- The Redis key schema (lua/redis/README.md, "Key schema"): the filter, the agent, metrics
-- and drain take every key name, and the form of a connection id (part of lease members),
-- from here.
local M = {}

--- Key names under one hash tag (every key of a call on one Redis Cluster slot).
function M.new(hash_tag)
  local tag = "{" .. hash_tag .. "}"
  return {
    rate = tag .. ":rate",                   -- upgrades' sliding window
    rate_requests = tag .. ":rate:requests", -- plain requests' window (limit_all_requests)
    stats = tag .. ":stats",                 -- counters, leases per proxy, the epoch
    leases = tag .. ":leases",               -- every lease: "<connection id> <pod>" -> expiry
    load = tag .. ":load",                   -- pod -> its lease count
    reach = tag .. ":reach",                 -- pod -> bitmask of the slots of the proxies that reach it
    down = tag .. ":down",                   -- pod -> end of its penalty (a failed upgrade)
    agents = tag .. ":agents",               -- proxy <-> slot, pods per slot
    beats = tag .. ":beats",                 -- slot -> its agent's last beat (0: being cleaned)
    recovery = tag .. ":recovery",           -- proxies a recovery waits for
    inventory = tag .. ":inventory",         -- connection id -> "pod proxy client start" (optional)
    clients = tag .. ":clients",             -- client key -> its open leases
    crate = tag .. ":crate",                 -- each client's window: "<client>:<time>:<id>"
    crate_t = tag .. ":crate:t",             -- the same entries by time: id -> admission time
  }
end

M.MAX_CONNECTION_ID = 200

--- A connection id as filter.lua writes them: <proxy>|<worker hex>|<counter>|<random hex>,
-- then |<client key> (16 hex digits, client_identity.lua) when the client is known.
function M.valid_connection_id(id)
  if type(id) ~= "string" or #id > M.MAX_CONNECTION_ID then return false end
  if id:match("^[a-z0-9.-]+|%x+|%d+|%x+$") then return true end
  local client = id:match("^[a-z0-9.-]+|%x+|%d+|%x+|(%x+)$")
  return client ~= nil and #client == 16
end

return M
