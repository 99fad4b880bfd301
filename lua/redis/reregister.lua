-- reregister.lua: put back the lease of a connection that is still open after
-- renew.lua answered 0 (lease expired, or Redis lost its state). The connection is
-- open, that is the truth, so the lease is added regardless of the per-pod limit
-- and of the rate limit (it is not a new upgrade); new admissions are refused
-- until the pod's count fits again (docs/filter.md).
-- KEYS[1] lease set of the pod, KEYS[2] stats, KEYS[3] pod index
-- ARGV[1] connection id, ARGV[2] pod id, ARGV[3] lease TTL ms
-- Reply: the pod's live lease count after re-registering (>= 1).
if #KEYS ~= 3 or #ARGV ~= 3 then
  return redis.error_reply('ERR reregister.lua: expected 3 KEYS and 3 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local key, id, pod, ttlArg = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if id == '' then return redis.error_reply('ERR reregister.lua: ARGV[1] connection id must not be empty') end
if pod == '' or string.sub(key, -(#pod + 5)) ~= ':pod:' .. pod then
  return redis.error_reply('ERR reregister.lua: KEYS[1] \'' .. key .. '\' is not the lease set of pod ARGV[2] \''
    .. pod .. '\' (expected a key ending in \':pod:' .. pod .. '\')')
end
if #ttlArg > 15 or not string.find(ttlArg, '^%d+$') or tonumber(ttlArg) < 1 then
  return redis.error_reply('ERR reregister.lua: ARGV[3] lease TTL ms must be an integer >= 1, got \'' .. ttlArg .. '\'')
end
local ttl = tonumber(ttlArg)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZREMRANGEBYSCORE', key, '-inf', tostring(now))
if expired > 0 then redis.call('HINCRBY', KEYS[2], 'expired', tostring(expired)) end
redis.call('ZADD', key, string.format('%d', now + ttl), id)
redis.call('PEXPIRE', key, string.format('%d', ttl + 60000))
redis.call('SADD', KEYS[3], pod)
redis.call('HINCRBY', KEYS[2], 'reregistered', 1)
return redis.call('ZCARD', key)
