-- release.lua: give a lease back (normal end of a WebSocket, or a non-101 answer).
-- KEYS[1] lease set of the pod, KEYS[2] stats, KEYS[3] pod index
-- ARGV[1] connection id, ARGV[2] pod id
-- Reply: 1 if a lease was removed, 0 if it was already gone (expired and pruned,
-- released before, or lost with Redis state). On removal it also deletes admit.lua's
-- "all full" hint (stats field hint:full). Contract: lua/redis/README.md.
if #KEYS ~= 3 or #ARGV ~= 2 then
  return redis.error_reply('ERR release.lua: expected 3 KEYS and 2 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local key, id, pod = KEYS[1], ARGV[1], ARGV[2]
if id == '' then return redis.error_reply('ERR release.lua: ARGV[1] connection id must not be empty') end
if pod == '' or string.sub(key, -(#pod + 5)) ~= ':pod:' .. pod then
  return redis.error_reply('ERR release.lua: KEYS[1] \'' .. key .. '\' is not the lease set of pod ARGV[2] \''
    .. pod .. '\' (expected a key ending in \':pod:' .. pod .. '\')')
end
local removed = redis.call('ZREM', key, id)
if removed == 1 then
  redis.call('HINCRBY', KEYS[2], 'released', '1')
  -- The pod now has a free slot (unless it was over the limit): drop admit.lua's
  -- "all full" hint, so the next admission counts the candidates exactly. The hint
  -- must never claim a pod full while it is not, and release.lua and release_proxy.lua
  -- are the only scripts that free a slot before a lease expires.
  redis.call('HDEL', KEYS[2], 'hint:full')
  -- Keep the index to pods that hold leases (the set is gone once it is empty).
  if redis.call('EXISTS', key) == 0 then redis.call('SREM', KEYS[3], pod) end
end
return removed
