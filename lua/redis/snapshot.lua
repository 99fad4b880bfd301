-- snapshot.lua: the metrics view, one call (every key it touches is declared).
-- KEYS[1] rate window, KEYS[2] stats, KEYS[3] leases, KEYS[4] load
-- ARGV[1] window ms
-- Gives back expired leases (counted in stats `expired`, as admit.lua does), and replies
--   { nowMs, windowUsed, {field, value, ...} stats counters (no field with a ':'),
--     {pod, count, ...} every pod that holds a lease, fewest first,
--     {proxy, count, ...} per proxy (the connection id up to its first '|';
--                         ids without one count as proxy 'unknown'): the stats
--                         fields leases:<proxy> the scripts keep }
-- Cost: O(pods holding leases + proxies) inside Redis, plus the expired leases it gives
-- back (each lease once). It never reads every lease.
if #KEYS ~= 4 or #ARGV ~= 1 then
  return redis.error_reply('ERR snapshot.lua: expected 4 KEYS and 1 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local winArg = ARGV[1]
if #winArg > 15 or not string.find(winArg, '^%d+$') or tonumber(winArg) < 1 then
  return redis.error_reply('ERR snapshot.lua: ARGV[1] window ms must be an integer >= 1, got \'' .. winArg .. '\'')
end
local call = redis.call
local kRate, kStats, kLeases, kLoad = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nowS = string.format('%d', now)
local windowUsed = call('ZCOUNT', kRate, '(' .. string.format('%d', now - tonumber(winArg)), '+inf')

local expired = 0
while true do
  local gone = call('ZRANGEBYSCORE', kLeases, '-inf', nowS, 'LIMIT', 0, 1000)
  if #gone == 0 then break end
  local byProxy = {}
  for i = 1, #gone do
    local m = gone[i]
    call('ZINCRBY', kLoad, '-1', string.sub(m, string.find(m, ' ', 1, true) + 1))
    local bar = string.find(m, '|', 1, true)
    local p = bar and string.sub(m, 1, bar - 1) or 'unknown'
    byProxy[p] = (byProxy[p] or 0) + 1
  end
  for p, n in pairs(byProxy) do
    if call('HINCRBY', kStats, 'leases:' .. p, string.format('%d', -n)) <= 0 then call('HDEL', kStats, 'leases:' .. p) end
  end
  call('ZREM', kLeases, unpack(gone))
  expired = expired + #gone
  if #gone < 1000 then break end
end
if expired > 0 then call('HINCRBY', kStats, 'expired', string.format('%d', expired)) end

local pods = {}
local load = call('ZRANGEBYSCORE', kLoad, '(0', '+inf', 'WITHSCORES')
for i = 1, #load, 2 do
  pods[#pods + 1] = load[i]
  pods[#pods + 1] = tonumber(load[i + 1])
end

-- The stats hash also holds the state epoch (field epoch:id) and the leases per proxy
-- (fields leases:<proxy>); neither is a counter (counter names never contain ':').
local all, stats, byProxyFlat = call('HGETALL', kStats), {}, {}
for j = 1, #all, 2 do
  local f = all[j]
  if string.sub(f, 1, 7) == 'leases:' then
    if tonumber(all[j + 1]) > 0 then
      byProxyFlat[#byProxyFlat + 1] = string.sub(f, 8)
      byProxyFlat[#byProxyFlat + 1] = tonumber(all[j + 1])
    end
  elseif not string.find(f, ':', 1, true) then
    stats[#stats + 1] = f
    stats[#stats + 1] = all[j + 1]
  end
end
return { now, windowUsed, stats, pods, byProxyFlat }
