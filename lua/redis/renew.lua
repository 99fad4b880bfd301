-- renew.lua: extend a live lease (called by the filter at most once per renew
-- interval while data flows).
-- KEYS[1] lease set of the pod; ARGV[1] connection id, ARGV[2] lease TTL ms
-- Reply: 1 if the lease was live and now expires at TIME + TTL (or later, if it
-- already did: a renewal never shortens a lease); 0 if it is gone or
-- already expired (its slot may have been handed out). On 0 the filter calls
-- reregister.lua: renew has only KEYS[1], so it cannot fix the index or counters,
-- and it leaves an expired lease in place for a script that can count it.
if #KEYS ~= 1 or #ARGV ~= 2 then
  return redis.error_reply('ERR renew.lua: expected 1 KEYS and 2 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local id, ttlArg = ARGV[1], ARGV[2]
if id == '' then return redis.error_reply('ERR renew.lua: ARGV[1] connection id must not be empty') end
if #ttlArg > 15 or not string.find(ttlArg, '^%d+$') or tonumber(ttlArg) < 1 then
  return redis.error_reply('ERR renew.lua: ARGV[2] lease TTL ms must be an integer >= 1, got \'' .. ttlArg .. '\'')
end
local ttl = tonumber(ttlArg)
local score = redis.call('ZSCORE', KEYS[1], id)
if not score then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(score) <= now then return 0 end
-- A renewal never moves an expiry earlier (a lease TTL lowered by a config change
-- applies from the lease's current expiry on): admit.lua's "full until" hints rely
-- on expiries only ever growing while a lease lives (renew cannot reach the hints).
-- Strings, not Lua numbers: Redis 7.0 formats a number argument with printf (~1 us).
local old = tonumber(score)
local expiry = now + ttl
-- %d, not tostring: tostring prints 1e14 and above in exponent form, which Redis refuses
-- after the ZADD has already run.
if expiry > old then redis.call('ZADD', KEYS[1], string.format('%d', expiry), id) else expiry = old end
-- Same key lifetime rule as admit.lua (this lease's expiry + 60 s).
redis.call('PEXPIRE', KEYS[1], string.format('%d', expiry - now + 60000))
return 1
