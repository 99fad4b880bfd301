-- request_rate.lua (a Redis script, run by filter.lua only when settings.limit_all_requests
-- is on): the global sliding-window rate limit alone, for a request that is not a
-- WebSocket upgrade. The rules of lua/redis/admit.lua step 1 on a window of its own
-- ({tag}:rate:requests), so plain requests never spend the upgrades' budget; no pod, no lease.
-- KEYS[1] rate window of plain requests (zset), KEYS[2] stats (hash)
-- ARGV[1] rate limit (> 0), ARGV[2] window ms, ARGV[3] unique request id (member)
-- Reply {status, retryAfterMs, rateRemaining}; status "ALLOWED" or "RATE_LIMITED".
if #KEYS ~= 2 or #ARGV ~= 3 then
  return redis.error_reply('ERR request_rate.lua: expected 2 KEYS and 3 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
for i = 1, 2 do
  if #ARGV[i] > 15 or not string.find(ARGV[i], '^%d+$') or tonumber(ARGV[i]) < 1 then
    return redis.error_reply('ERR request_rate.lua: ARGV[' .. i .. '] must be an integer >= 1, got \'' .. ARGV[i] .. '\'')
  end
end
if ARGV[3] == '' then return redis.error_reply('ERR request_rate.lua: ARGV[3] request id must not be empty') end
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local used = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
if used >= limit then
  local e = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
  local retry = 1
  if e[2] then retry = math.max(1, tonumber(e[2]) + window - now) end
  redis.call('HINCRBY', KEYS[2], 'rejected_rate_limited', 1)
  return { 'RATE_LIMITED', retry, 0 }
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
-- No PEXPIRE here: admit.lua shares this key and never sets a TTL on it (trimming keeps
-- it at most `limit` entries); an expiry set by a plain request would delete the
-- upgrades admitted after it when it fires, and the window would under-count.
return { 'ALLOWED', 0, limit - used - 1 }
