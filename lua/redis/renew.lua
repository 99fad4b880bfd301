-- renew.lua: extend a live lease (called by the filter at most once per renew
-- interval while data flows).
-- KEYS[1] leases; ARGV[1] connection id, ARGV[2] pod id, ARGV[3] lease TTL ms
-- Reply: 1 if the lease was live and now expires at TIME + TTL (or later, if it
-- already did: a renewal never shortens a lease); 0 if it is gone or already expired
-- (its slot may have been given back). On 0 the filter calls reregister.lua: renew has
-- only KEYS[1], so it cannot fix the pod's count or the counters, and it leaves an
-- expired lease in place for admit.lua to give back and count.
if #KEYS ~= 1 or #ARGV ~= 3 then
  return redis.error_reply('ERR renew.lua: expected 1 KEYS and 3 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local id, pod, ttlArg = ARGV[1], ARGV[2], ARGV[3]
if id == '' or string.find(id, ' ', 1, true) then
  return redis.error_reply('ERR renew.lua: ARGV[1] connection id must be non-empty without spaces, got \'' .. id .. '\'')
end
if pod == '' or string.find(pod, ' ', 1, true) then
  return redis.error_reply('ERR renew.lua: ARGV[2] pod id must be non-empty without spaces, got \'' .. pod .. '\'')
end
if #ttlArg > 15 or not string.find(ttlArg, '^%d+$') or tonumber(ttlArg) < 1 then
  return redis.error_reply('ERR renew.lua: ARGV[3] lease TTL ms must be an integer >= 1, got \'' .. ttlArg .. '\'')
end
local member = id .. ' ' .. pod
local score = redis.call('ZSCORE', KEYS[1], member)
if not score then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(score)
if old <= now then return 0 end
-- A renewal never moves an expiry earlier (a lease TTL lowered by a config change
-- applies from the lease's current expiry on).
local expiry = now + tonumber(ttlArg)
-- %d, not tostring: tostring prints 1e14 and above in exponent form.
if expiry > old then redis.call('ZADD', KEYS[1], string.format('%d', expiry), member) end
return 1
