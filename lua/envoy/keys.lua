-- The Redis key schema (lua/redis/README.md, "Key schema"): the filter, metrics.lua,
-- drain.lua and lease_log.lua take every key name, and the form of a connection id
-- (part of key names and lease members), from here.
local M = {}

--- Key names under one hash tag (every key of a call on one Redis Cluster slot).
-- `conn` is a prefix: append the connection id.
function M.new(hash_tag)
  local tag = "{" .. hash_tag .. "}"
  return {
    rate = tag .. ":rate",                   -- upgrades' sliding window
    rate_requests = tag .. ":rate:requests", -- plain requests' window (limit_all_requests)
    stats = tag .. ":stats",
    leases = tag .. ":leases",               -- every lease: "<connection id> <pod>" -> expiry
    load = tag .. ":load",                   -- pod -> its lease count
    views = tag .. ":views",                 -- host view id -> last use
    hosts = tag .. ":hosts",                 -- "<view id> <pod>" for each pod of each view
    conn = tag .. ":conn:",
  }
end

M.MAX_CONNECTION_ID = 200

--- A connection id as filter.lua writes them: <proxy>|<worker hex>|<counter>|<random hex>.
function M.valid_connection_id(id)
  return type(id) == "string" and #id <= M.MAX_CONNECTION_ID
    and id:match("^[a-z0-9.-]+|%x+|%d+|%x+$") ~= nil
end

--- The host view id of a list of pod ids: 16 hex digits that depend only on the set
-- (the list is sorted first), so every worker and proxy that sees the same healthy
-- hosts names the same view. Two polynomial hashes modulo different primes below 2^32
-- (plain double arithmetic, exact: every product stays below 2^53). Not a defence
-- against a chosen collision (the list comes from Envoy's own admin, not from a
-- client); the filter also checks that the pod Redis picks is in its own list.
function M.view_id(list)
  local sorted = {}
  for i = 1, #list do sorted[i] = list[i] end
  table.sort(sorted)
  local s = table.concat(sorted, "\n")
  local P1, P2 = 4294967291, 4294967279
  local h1, h2 = #sorted % P1, 7
  local byte = string.byte
  for i = 1, #s do
    local c = byte(s, i)
    h1 = (h1 * 131 + c) % P1
    h2 = (h2 * 257 + c + 1) % P2
  end
  return string.format("%08x%08x", h1, h2)
end

return M
