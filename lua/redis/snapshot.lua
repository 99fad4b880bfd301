-- snapshot.lua: the metrics view, second of two calls (Redis Cluster safe: every
-- key it touches is declared). Call 1 is a plain `SMEMBERS {tag}:pods`; call 2
-- passes the lease set of each listed pod:
-- KEYS[1] rate window, KEYS[2] stats, KEYS[3] pod index, KEYS[4..3+n] lease sets
-- ARGV[1] window ms, ARGV[2..1+n] pod ids in the order of the keys
-- Prunes expired leases (counted in stats `expired`), drops pods with no lease
-- left from the index, and replies
--   { nowMs, windowUsed, {field, value, ...} stats counters (not the hints),
--     {pod, liveCount, ...} one pair per pod given (0 for an empty one),
--     {proxy, liveCount, ...} per proxy (the connection id up to its first '|';
--                             ids without one count as proxy 'unknown') }
-- Cost: O(live leases) inside Redis (the per-proxy split reads every member).
if #KEYS < 3 or #ARGV ~= #KEYS - 2 then
  return redis.error_reply('ERR snapshot.lua: expected 3+n KEYS and 1+n ARGV for n pods, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local winArg = ARGV[1]
if #winArg > 15 or not string.find(winArg, '^%d+$') or tonumber(winArg) < 1 then
  return redis.error_reply('ERR snapshot.lua: ARGV[1] window ms must be an integer >= 1, got \'' .. winArg .. '\'')
end
local n = #KEYS - 3
for i = 1, n do
  local pod, key = ARGV[1 + i], KEYS[3 + i]
  if pod == '' or string.sub(key, -(#pod + 5)) ~= ':pod:' .. pod then
    return redis.error_reply('ERR snapshot.lua: KEYS[' .. (3 + i) .. '] \'' .. key .. '\' is not the lease set of pod ARGV['
      .. (1 + i) .. '] \'' .. pod .. '\' (expected a key ending in \':pod:' .. pod .. '\')')
  end
end
local call = redis.call
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nowS = tostring(now) -- one string for every pod (number arguments cost ~1 us each)
local windowUsed = call('ZCOUNT', KEYS[1], '(' .. tostring(now - tonumber(winArg)), '+inf')

local pods, proxies, byProxy = {}, {}, {}
local expired = 0
for i = 1, n do
  local key, pod = KEYS[3 + i], ARGV[1 + i]
  expired = expired + call('ZREMRANGEBYSCORE', key, '-inf', nowS)
  local members = call('ZRANGE', key, 0, -1)
  if #members == 0 then call('SREM', KEYS[3], pod) end
  pods[#pods + 1] = pod
  pods[#pods + 1] = #members
  for j = 1, #members do
    local id = members[j]
    local bar = string.find(id, '|', 1, true)
    local proxy = bar and string.sub(id, 1, bar - 1) or 'unknown'
    local c = byProxy[proxy]
    if not c then
      proxies[#proxies + 1] = proxy
      c = 0
    end
    byProxy[proxy] = c + 1
  end
end
if expired > 0 then call('HINCRBY', KEYS[2], 'expired', tostring(expired)) end
local byProxyFlat = {}
for _, proxy in ipairs(proxies) do
  byProxyFlat[#byProxyFlat + 1] = proxy
  byProxyFlat[#byProxyFlat + 1] = byProxy[proxy]
end
-- The stats hash also holds admit.lua's "all full" hint (field hint:full); it is
-- not a counter, so it is left out of the reply (counter names never contain ':').
local all, stats = call('HGETALL', KEYS[2]), {}
for j = 1, #all, 2 do
  local f = all[j]
  if not string.find(f, ':', 1, true) then
    stats[#stats + 1] = f
    stats[#stats + 1] = all[j + 1]
  end
end
return { now, windowUsed, stats, pods, byProxyFlat }
