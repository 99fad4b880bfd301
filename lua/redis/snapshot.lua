-- snapshot.lua: the metrics view, one call (every key it touches is declared).
-- KEYS[1] rate window, KEYS[2] stats, KEYS[3] leases, KEYS[4] load
-- ARGV[1] window ms
-- Gives back expired leases (counted in stats `expired`, as admit.lua does), and replies
--   { nowMs, windowUsed, {field, value, ...} stats counters (no field with a ':'),
--     {pod, count, ...} every pod that holds a lease, fewest first,
--     {proxy, count, ...} per proxy (the connection id up to its first '|';
--                         ids without one count as proxy 'unknown') }
-- Cost: O(pods + leases) inside Redis (the per-proxy split reads every lease).
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
  for i = 1, #gone do
    local m = gone[i]
    call('ZINCRBY', kLoad, '-1', string.sub(m, string.find(m, ' ', 1, true) + 1))
  end
  if #gone > 0 then call('ZREM', kLeases, unpack(gone)) end
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

local proxies, byProxy = {}, {}
local members = call('ZRANGE', kLeases, 0, -1)
for j = 1, #members do
  local m = members[j]
  local bar = string.find(m, '|', 1, true)
  local proxy = bar and string.sub(m, 1, bar - 1) or 'unknown'
  local c = byProxy[proxy]
  if not c then
    proxies[#proxies + 1] = proxy
    c = 0
  end
  byProxy[proxy] = c + 1
end
local byProxyFlat = {}
for _, proxy in ipairs(proxies) do
  byProxyFlat[#byProxyFlat + 1] = proxy
  byProxyFlat[#byProxyFlat + 1] = byProxy[proxy]
end
-- The stats hash also holds the state epoch (field epoch:id); it is not a counter,
-- so it is left out of the reply (counter names never contain ':').
local all, stats = call('HGETALL', kStats), {}
for j = 1, #all, 2 do
  local f = all[j]
  if not string.find(f, ':', 1, true) then
    stats[#stats + 1] = f
    stats[#stats + 1] = all[j + 1]
  end
end
return { now, windowUsed, stats, pods, byProxyFlat }
