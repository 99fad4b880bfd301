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

-- Number-to-string conversions cost about as much as a cheap Redis command, so
-- each value is formatted once and ARGV strings are passed through untouched.
local floor, tonumber, tostring = math.floor, tonumber, tostring
local t = call('TIME')
local now = t[1] * 1000 + floor(t[2] / 1000)
local nowS = tostring(now)

-- 1. Rate limit, checked first so a flood is refused without touching any pod.
-- An entry counts while its score > now - window. Entries that left the window
-- are trimmed when we write (on admission), so the set may hold a few stale ones:
-- ZCARD is an upper bound of the live count, and only when it reaches the limit
-- does the exact ZCOUNT decide.
local rateRemaining = -1
local card = 0
local floorS
if limit > 0 then
  floorS = tostring(now - window)
  card = call('ZCARD', KEYS[1])
  local used = card
  if card >= limit then
    used = call('ZCOUNT', KEYS[1], '(' .. floorS, '+inf')
    if used >= limit then
      -- One more fits once the (used-limit)th live entry (0-based; used > limit
      -- only after the limit was lowered) has left the window.
      local e = call('ZRANGEBYSCORE', KEYS[1], '(' .. floorS, '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
      local retry = 1
      if e[2] then retry = math.max(1, tonumber(e[2]) + window - now) end
      call('HINCRBY', KEYS[2], 'rejected_rate_limited', '1')
      return { 'RATE_LIMITED', '', 0, retry, 0 }
    end
  end
  rateRemaining = limit - used -- exact when card >= limit, else a lower bound
end

-- 2. Candidates, in the given order. A pod is full when at least maxPer of its
-- leases are live; its "slot frees" time is the expiry of its maxPer-th newest
-- lease (rank card-maxPer): then it holds maxPer-1 live leases unless renewed.
-- That is the FULL hint. Each candidate should cost one call:
--  * maxPer <= 8 (the usual case): ZRANGE 0..maxPer WITHSCORES fetches up to
--    maxPer+1 leases in expiry order, which alone gives the live count, whether
--    anything expired, and the hint;
--  * larger limits: the maxPer-th newest lease alone proves a pod full; a pod with
--    room is then counted exactly.
-- Expired leases are pruned whenever they could change the decision. A pod proven
-- full is not pruned (nothing it holds can change a refusal); the next call that
-- counts it, reregister.lua or the metrics snapshot prunes and counts them.
local negMax = '-' .. ARGV[3]
local small = maxPer <= 8
local best, bestCount = 0, maxPer
local expired = 0
local hint -- earliest "slot frees" time among full candidates

-- Exact live count of a pod, pruning first; plus its slot-frees time if full.
local function countExact(key)
  expired = expired + call('ZREMRANGEBYSCORE', key, '-inf', nowS)
  local c = call('ZCARD', key)
  if c >= maxPer then return c, tonumber(call('ZRANGE', key, negMax, negMax, 'WITHSCORES')[2]) end
  return c
end

for i = 1, n do
  local key = KEYS[3 + i]
  local c, frees
  if small then
    local r = call('ZRANGE', key, '0', ARGV[3], 'WITHSCORES')
    local k = #r / 2
    local e = 0
    while e < k and tonumber(r[2 * e + 2]) <= now do e = e + 1 end
    if k <= maxPer then -- the whole set
      if e > 0 then expired = expired + call('ZREMRANGEBYSCORE', key, '-inf', nowS) end
      c = k - e
      if c >= maxPer then frees = tonumber(r[2]) end
    elseif e == 0 then -- more than maxPer live leases (re-registered): full
      c, frees = k, tonumber(call('ZRANGE', key, negMax, negMax, 'WITHSCORES')[2])
    else
      c, frees = countExact(key)
    end
  else
    local r = call('ZRANGE', key, negMax, negMax, 'WITHSCORES')
    local s = r[2] and tonumber(r[2])
    if s and s > now then
      c, frees = maxPer, s
    else
      c = call('ZCARD', key)
      if c > 0 then c, frees = countExact(key) end
    end
  end
  if c >= maxPer then
    if not hint or frees < hint then hint = frees end
  elseif c < bestCount then
    best, bestCount = i, c
    -- Nothing beats an empty pod and ties go to the first: the decision is made.
    -- Later candidates are left as they are (no count of theirs can matter).
    if c == 0 then break end
  end
end

if best == 0 then
  if expired > 0 then call('HINCRBY', KEYS[2], 'expired', expired) end
  call('HINCRBY', KEYS[2], 'rejected_capacity', '1')
  local retry = 0
  if hint then retry = math.max(1, hint - now) end
  return { 'FULL', '', 0, retry, rateRemaining }
end

-- 3. Admit: lease on the chosen pod, window entry, counters.
local key, pod = KEYS[3 + best], ARGV[5 + best]
local active = bestCount + call('ZADD', key, tostring(now + ttl), id)
call('PEXPIRE', key, tostring(ttl + KEY_MARGIN_MS))
-- The index holds every pod with a non-empty lease set: a pod enters it when its
-- set goes from empty to non-empty (here and in reregister.lua) and leaves it when
-- a script sees the set empty, so a pod that already had leases is already in it.
-- (A set emptied by pruning above is always the chosen pod: the loop stops at the
-- first empty candidate, so admit never has to drop a pod from the index.)
if bestCount == 0 then call('SADD', KEYS[3], pod) end
if limit > 0 then
  -- Trim what left the window; the removed count makes rateRemaining exact. The
  -- set needs no TTL: trimmed on every admission, it never holds more than
  -- `limit` entries (a few hundred bytes), and one admission later it is current.
  if card > 0 then
    rateRemaining = limit - (card - call('ZREMRANGEBYSCORE', KEYS[1], '-inf', floorS))
  end
  call('ZADD', KEYS[1], nowS, id)
  rateRemaining = rateRemaining - 1
end
if expired > 0 then call('HINCRBY', KEYS[2], 'expired', expired) end
call('HINCRBY', KEYS[2], 'admitted', '1')
return { 'ADMITTED', pod, active, 0, rateRemaining }
