-- admit.lua: one atomic WebSocket admission decision (global sliding-window rate
-- limit + least-loaded pod with a free slot + a lease on it). Contract and key
-- schema: lua/redis/README.md and DESIGN.md "Redis contract".
--
-- KEYS[1] rate window (zset member=connection id, score=admission ms)
-- KEYS[2] stats (hash)   KEYS[3] pod index (set)   KEYS[4..3+n] lease sets
-- ARGV[1] rate limit (0 = off)  ARGV[2] window ms  ARGV[3] max per pod
-- ARGV[4] lease TTL ms  ARGV[5] connection id  ARGV[6..5+n] pod ids
-- Reply {status, pod, activeOnPod, retryAfterMs, rateRemaining}.
--
-- Written for Redis 6.x/7.x without a shebang (flags need 7.0) and with every key
-- in KEYS, so it runs unchanged on a cluster shard. Hot path: every redis.call
-- costs throughput (benchmarked against INCR), hence the read-before-write
-- shortcuts below; each one is explained where it is taken.
local call = redis.call
local nkeys, nargs = #KEYS, #ARGV
local n = nkeys - 3
if n < 0 or nargs ~= n + 5 then
  return redis.error_reply('ERR admit.lua: expected 3+n KEYS and 5+n ARGV for n candidate pods, got '
    .. nkeys .. ' KEYS and ' .. nargs .. ' ARGV')
end

-- Strict decimal integers only: tonumber() would also take '0x10', '1e3', ' 5'.
local function uint(i, what, min)
  local v = ARGV[i]
  if #v > 15 or not string.find(v, '^%d+$') or tonumber(v) < min then
    return nil, redis.error_reply('ERR admit.lua: ARGV[' .. i .. '] ' .. what .. ' must be an integer >= '
      .. min .. ', got \'' .. v .. '\'')
  end
  return tonumber(v)
end
local limit, err = uint(1, 'rate limit', 0)
if not limit then return err end
local window; window, err = uint(2, 'window ms', 1)
if not window then return err end
local maxPer; maxPer, err = uint(3, 'max connections per pod', 1)
if not maxPer then return err end
local ttl; ttl, err = uint(4, 'lease TTL ms', 1)
if not ttl then return err end
local id = ARGV[5]
if id == '' then return redis.error_reply('ERR admit.lua: ARGV[5] connection id must not be empty') end
for i = 1, n do
  local pod, key = ARGV[5 + i], KEYS[3 + i]
  -- A lease set that does not belong to its pod id would corrupt the index.
  if pod == '' or string.sub(key, -(#pod + 5)) ~= ':pod:' .. pod then
    return redis.error_reply('ERR admit.lua: KEYS[' .. (3 + i) .. '] \'' .. key .. '\' is not the lease set of pod ARGV['
      .. (5 + i) .. '] \'' .. pod .. '\' (expected a key ending in \':pod:' .. pod .. '\')')
  end
end

-- Lease sets outlive their newest lease by this much, so an abandoned set vanishes
-- by itself, but only after metrics had time to prune (and count) its leases.
local KEY_MARGIN_MS = 60000

local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- 1. Rate limit, read-only: an entry counts while score > now - window. Entries
-- that left the window are trimmed only when we write (on admission), so a
-- refusal costs one ZCOUNT. Checked first: a flood is refused without touching pods.
local rateRemaining = -1
local used = 0
if limit > 0 then
  used = call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
  if used >= limit then
    -- The (used-limit)th live entry must leave before one more fits (used > limit
    -- only after the limit was lowered).
    local e = call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
    local retry = 1
    if e[2] then retry = math.max(1, tonumber(e[2]) + window - now) end
    call('HINCRBY', KEYS[2], 'rejected_rate_limited', 1)
    return { 'RATE_LIMITED', '', 0, retry, 0 }
  end
  rateRemaining = limit - used
end

-- 2. Candidates. One ZRANGE per candidate fetches up to F leases in expiry order:
-- with F = maxPer+1 (small limits, the usual case) that alone tells the live count,
-- whether the pod is full, whether anything expired and the earliest expiry.
local F = math.min(maxPer, 8) + 1
local best, bestCount = 0, maxPer
local expired = 0
local earliest -- earliest live expiry among full candidates (FULL hint)
for i = 1, n do
  local key = KEYS[3 + i]
  local r = call('ZRANGE', key, 0, F - 1, 'WITHSCORES')
  local k = #r / 2
  local c = k
  if k > 0 then
    local e = 0
    while e < k and tonumber(r[2 * e + 2]) <= now do e = e + 1 end
    if e > 0 then
      expired = expired + call('ZREMRANGEBYSCORE', key, '-inf', now)
    end
    if k < F then
      c = k - e -- the whole set was fetched
    elseif e > 0 or F <= maxPer then
      c = call('ZCARD', key) -- more leases than fetched: count them
    end -- else: F > maxPer leases, none expired: full, exact count not needed
    if c >= maxPer then
      local s
      if e < k then s = tonumber(r[2 * e + 2])
      else s = tonumber(call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) end
      if s and (not earliest or s < earliest) then earliest = s end
    end
  end
  if c < bestCount then
    best, bestCount = i, c
    -- Nothing beats an empty pod and ties go to the first: the decision is made.
    -- Later candidates are left unpruned; their expired leases are pruned (and
    -- counted) by the next call that looks at them, or by the metrics snapshot.
    if c == 0 then break end
  end
end

if best == 0 then
  if expired > 0 then call('HINCRBY', KEYS[2], 'expired', expired) end
  call('HINCRBY', KEYS[2], 'rejected_capacity', 1)
  local retry = 0
  if earliest then retry = math.max(1, earliest - now) end
  return { 'FULL', '', 0, retry, rateRemaining }
end

-- 3. Admit: lease on the chosen pod, window entry, counters.
local key, pod = KEYS[3 + best], ARGV[5 + best]
local active = bestCount + call('ZADD', key, now + ttl, id)
call('PEXPIRE', key, ttl + KEY_MARGIN_MS)
-- The index holds every pod with a non-empty lease set: a pod enters it when its
-- set goes from empty to non-empty (here and in reregister.lua) and leaves it when
-- a script sees the set empty, so a pod that already had leases is already in it.
-- (A set emptied by pruning above is always the chosen pod: the loop stops at the
-- first empty candidate, so admit never has to drop a pod from the index.)
if bestCount == 0 then call('SADD', KEYS[3], pod) end
if limit > 0 then
  call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  call('ZADD', KEYS[1], now, id)
  call('PEXPIRE', KEYS[1], window)
  rateRemaining = rateRemaining - 1
end
if expired > 0 then call('HINCRBY', KEYS[2], 'expired', expired) end
call('HINCRBY', KEYS[2], 'admitted', 1)
return { 'ADMITTED', pod, active, 0, rateRemaining }
