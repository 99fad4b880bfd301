-- release.lua: give a lease back (normal end of a WebSocket, a non-101 answer, the
-- lease log, an admission whose answer was lost).
-- KEYS[1] leases, KEYS[2] load, KEYS[3] stats
-- ARGV[1] connection id, ARGV[2] pod id
-- Reply: 1 if the lease was removed (then the pod's and the proxy's counts drop by one
-- and `released` + 1), 0 if it was already gone (released before, expired and given back, or lost with
-- Redis's state). An expired lease that admit.lua has not given back yet still counts
-- as released. Contract: lua/redis/README.md.
if #KEYS ~= 3 or #ARGV ~= 2 then
  return redis.error_reply('ERR release.lua: expected 3 KEYS and 2 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local id, pod = ARGV[1], ARGV[2]
if id == '' or string.find(id, ' ', 1, true) then
  return redis.error_reply('ERR release.lua: ARGV[1] connection id must be non-empty without spaces, got \'' .. id .. '\'')
end
if pod == '' or string.find(pod, ' ', 1, true) then
  return redis.error_reply('ERR release.lua: ARGV[2] pod id must be non-empty without spaces, got \'' .. pod .. '\'')
end
local removed = redis.call('ZREM', KEYS[1], id .. ' ' .. pod)
if removed == 1 then
  redis.call('ZINCRBY', KEYS[2], '-1', pod)
  redis.call('HINCRBY', KEYS[3], 'released', '1')
  -- The proxy's lease count (stats field leases:<proxy>, as admit.lua keeps it).
  local bar = string.find(id, '|', 1, true)
  local field = 'leases:' .. (bar and string.sub(id, 1, bar - 1) or 'unknown')
  if redis.call('HINCRBY', KEYS[3], field, '-1') <= 0 then redis.call('HDEL', KEYS[3], field) end
end
return removed
