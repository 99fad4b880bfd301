-- reregister.lua: put back the lease of a connection that is still open after
-- renew.lua answered 0 (lease expired, or Redis lost its state). The connection is
-- open, that is the truth, so the lease is added regardless of the per-pod limit and
-- of the rate limit (it is not a new upgrade); new admissions to the pod are refused
-- until its count fits again (docs/filter.md).
-- KEYS[1] leases, KEYS[2] load, KEYS[3] stats
-- ARGV[1] connection id, ARGV[2] pod id, ARGV[3] lease TTL ms
-- An expired lease that admit.lua has not given back yet is simply renewed (it is still
-- in the pod's count); a missing one is added and counted. `reregistered` + 1.
-- Reply: the pod's lease count afterwards (>= 1).
if #KEYS ~= 3 or #ARGV ~= 3 then
  return redis.error_reply('ERR reregister.lua: expected 3 KEYS and 3 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local id, pod, ttlArg = ARGV[1], ARGV[2], ARGV[3]
if id == '' or string.find(id, ' ', 1, true) then
  return redis.error_reply('ERR reregister.lua: ARGV[1] connection id must be non-empty without spaces, got \'' .. id .. '\'')
end
if pod == '' or string.find(pod, ' ', 1, true) then
  return redis.error_reply('ERR reregister.lua: ARGV[2] pod id must be non-empty without spaces, got \'' .. pod .. '\'')
end
if #ttlArg > 15 or not string.find(ttlArg, '^%d+$') or tonumber(ttlArg) < 1 then
  return redis.error_reply('ERR reregister.lua: ARGV[3] lease TTL ms must be an integer >= 1, got \'' .. ttlArg .. '\'')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = id .. ' ' .. pod
local added = redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ttlArg)), member)
local count
if added == 1 then
  count = redis.call('ZINCRBY', KEYS[2], '1', pod)
  -- The proxy's lease count (stats field leases:<proxy>, as admit.lua keeps it).
  local bar = string.find(id, '|', 1, true)
  redis.call('HINCRBY', KEYS[3], 'leases:' .. (bar and string.sub(id, 1, bar - 1) or 'unknown'), '1')
else
  count = redis.call('ZSCORE', KEYS[2], pod)
end
redis.call('HINCRBY', KEYS[3], 'reregistered', '1')
return tonumber(count)
