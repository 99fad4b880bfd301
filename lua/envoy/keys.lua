-- The Redis key schema (lua/redis/README.md, "Key schema"): the filter, metrics.lua,
-- drain.lua and lease_log.lua take every key name, and the form of a connection id
-- (part of key names and lease members), from here.
local M = {}

--- Key names under one hash tag (every key of a call on one Redis Cluster slot).
-- `pod` and `conn` are prefixes: append the pod id (ip:port) or the connection id.
function M.new(hash_tag)
  local tag = "{" .. hash_tag .. "}"
  return {
    rate = tag .. ":rate",                   -- upgrades' sliding window
    rate_requests = tag .. ":rate:requests", -- plain requests' window (limit_all_requests)
    stats = tag .. ":stats",
    pods = tag .. ":pods",
    pod = tag .. ":pod:",
    conn = tag .. ":conn:",
  }
end

M.MAX_CONNECTION_ID = 200

--- A connection id as filter.lua writes them: <proxy>|<worker hex>|<counter>|<random hex>.
function M.valid_connection_id(id)
  return type(id) == "string" and #id <= M.MAX_CONNECTION_ID
    and id:match("^[a-z0-9.-]+|%x+|%d+|%x+$") ~= nil
end

return M
