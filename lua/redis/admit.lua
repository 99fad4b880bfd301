-- admit.lua: one atomic WebSocket admission decision (global sliding-window rate
-- limit + least-loaded pod with a free slot + a lease on it). Contract and key
-- schema: lua/redis/README.md and the project design's "Redis contract".
--
-- KEYS[1] rate window (zset member=connection id, score=admission ms)
-- KEYS[2] stats (hash)   KEYS[3] pod index (set)   KEYS[4..3+n] lease sets
-- ARGV[1] rate limit (0 = off)  ARGV[2] window ms  ARGV[3] max per pod
-- ARGV[4] lease TTL ms  ARGV[5] connection id  ARGV[6..5+n] pod ids
-- [ARGV[6+n] the state epoch the caller holds (optional)]
-- Reply {status, pod, activeOnPod, retryAfterMs, rateRemaining}; with an epoch that is
-- not the stats field `epoch:id` (Redis lost its state, or it was never set), nothing
-- is decided: {'EPOCH', current epoch or '', 0, 0, 0}.
--
-- Written for Redis 6.x/7.x: no shebang (script flags need 7.0), every key in
-- KEYS, so it runs unchanged on a cluster shard.
--
-- This is the hot path, benchmarked against INCR (bench/redis.ts). Measured on
-- Redis 7.0 (callgrind and in-script loops): the fixed cost of an EVALSHA with 14
-- arguments is ~6x an INCR; a cheap redis.call costs 0.3-0.5 us; every score in a
-- reply costs ~0.65 us (printf "%.17g"), and every Lua *number* passed to
-- redis.call ~1 us (twice a Lua tostring()). Hence: one call per candidate in the
-- common cases, scores fetched only where a decision needs them, arguments passed
-- as strings, and a trusted caller: admit does not check that KEYS[3+i] is the
-- lease set of ARGV[5+i] (that check alone cost 6% of the refusal path; the other
-- scripts do check it).
local call = redis.call
local tonumber = tonumber
local nkeys, nargs = #KEYS, #ARGV
local n = nkeys - 3
if n < 0 or (nargs ~= n + 5 and nargs ~= n + 6) then
  return redis.error_reply('ERR admit.lua: expected 3+n KEYS and 5+n ARGV (6+n with an epoch) for n candidate pods, got '
    .. nkeys .. ' KEYS and ' .. nargs .. ' ARGV')
end

local limit, window, maxPer, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- tonumber() also takes ' 5' or '1e3' at their value; NaN fails every comparison.
-- (No helper closure on the good path: every allocation costs on the hot path.)
if not (limit and limit >= 0 and limit < 1e15 and limit % 1 == 0) then
  return redis.error_reply('ERR admit.lua: ARGV[1] rate limit must be an integer >= 0, got \'' .. ARGV[1] .. '\'')
end
if not (window and window >= 1 and window < 1e15 and window % 1 == 0) then
  return redis.error_reply('ERR admit.lua: ARGV[2] window ms must be an integer >= 1, got \'' .. ARGV[2] .. '\'')
end
if not (maxPer and maxPer >= 1 and maxPer < 1e15 and maxPer % 1 == 0) then
  return redis.error_reply('ERR admit.lua: ARGV[3] max connections per pod must be an integer >= 1, got \'' .. ARGV[3] .. '\'')
end
if not (ttl and ttl >= 1 and ttl < 1e15 and ttl % 1 == 0) then
  return redis.error_reply('ERR admit.lua: ARGV[4] lease TTL ms must be an integer >= 1, got \'' .. ARGV[4] .. '\'')
end
local id = ARGV[5]
if id == '' then return redis.error_reply('ERR admit.lua: ARGV[5] connection id must not be empty') end

-- 0. The state the caller's connections were registered in. After a state loss (a
-- restart without persistence, a failover to an empty replica) the caller must first
-- re-register its open connections, or this decision would count none of them.
if nargs == n + 6 then
  local cur = call('HGET', KEYS[2], 'epoch:id')
  if cur ~= ARGV[nargs] then return { 'EPOCH', cur or '', 0, 0, 0 } end
end

-- Lease sets outlive their newest lease by this much, so an abandoned set vanishes
-- by itself, but only after metrics had time to prune (and count) its leases.
local KEY_MARGIN_MS = 60000

-- Numbers to strings with '%d': tostring() (printf "%.14g") costs about 2.3x as
-- much (callgrind: 4.6k vs 2k instructions).
local format = string.format
local t = call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)

-- 1. Rate limit, checked first so a flood is refused without touching any pod.
-- An entry counts while its score > now - window. Entries that left the window
-- are trimmed when we write (on admission), so the set may hold a few stale ones:
-- ZCARD is an upper bound of the live count, and only when it reaches the limit
-- does the exact ZCOUNT decide.
local rateRemaining = -1
local card = 0
if limit > 0 then
  card = call('ZCARD', KEYS[1])
  local used = card
  if card >= limit then
    local live = '(' .. format('%d', now - window)
    used = call('ZCOUNT', KEYS[1], live, '+inf')
    if used >= limit then
      -- One more fits once the (used-limit)th live entry (0-based; used > limit
      -- only after the limit was lowered) has left the window.
      local e = call('ZRANGEBYSCORE', KEYS[1], live, '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
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
-- lease: then it holds maxPer-1 live leases unless renewed. The FULL reply's
-- retryAfterMs is the earliest such time among the candidates.
--
-- The "all full" hint first: stats field `hint:full` = 16 digits h * 1000 + m
-- (m < 1000), followed by the candidates' lease-set keys joined by NUL, exactly as
-- the call that found them all full gave them. It states: each of these lease
-- sets holds at least m live leases at every instant before h (ms). Every script
-- keeps that true without reading it: leases are only added (admit, reregister), renewed to
-- a later expiry (renew never shortens one), pruned once expired (an expiry <= now
-- is before no future instant), or removed by release.lua or release_proxy.lua,
-- which delete the hint in the same call. So when the hint names exactly this call's candidates, h > now
-- and m >= maxPer, every candidate is full: FULL without reading a lease set (one
-- HGET, no score formatted). Otherwise every candidate is counted exactly, as if
-- there were no hint, and a FULL found that way writes the hint.
local best, bestCount = 0, maxPer
local hint, hintS -- earliest "slot frees" time among full candidates (number, string)
local hinting = n > 0 and maxPer < 1000
if hinting then
  local v = call('HGET', KEYS[2], 'hint:full')
  -- Time and limit first, then the candidate list.
  local x = v and tonumber(string.sub(v, 1, 16))
  -- x > now * 1000 + 999 <=> h > now, for any m <= 999
  if x and x > now * 1000 + 999 and x % 1000 >= maxPer then
    local joined = table.concat(KEYS, '\0', 4, nkeys)
    if #v == 16 + #joined and string.sub(v, 17) == joined then
      call('HINCRBY', KEYS[2], 'rejected_capacity', '1')
      return { 'FULL', '', 0, (x - x % 1000) / 1000 - now, rateRemaining }
    end
  end
end

-- Exact count. maxPer <= 8: one call fetches the pod's maxPer newest leases with
-- their scores (all of them when it has fewer), oldest first: full if there are
-- maxPer and the oldest of them is live; otherwise the live ones among them are
-- all its live leases (every older lease expired before the oldest fetched one).
-- Larger limits: the maxPer-th newest score decides fullness, ZCARD/ZCOUNT count.
-- Expired leases are pruned (and counted) whenever they could change the
-- decision. A pod proven full is not pruned: its expired leases cannot change a
-- refusal; the next call that counts it, reregister.lua or the metrics snapshot
-- prunes and counts them.
-- The same instant as a string, from TIME's own digits (no number formatting):
-- seconds .. first 3 digits of the zero-padded microseconds.
local us = t[2]
if #us < 6 then us = string.rep('0', 6 - #us) .. us end
local nowS = t[1] .. string.sub(us, 1, 3)
local nth = '-' .. ARGV[3]
local expired = 0
for i = 1, n do
  local key = KEYS[3 + i]
  local c, full, fullN -- the maxPer-th newest lease's score (string, number), if live
  if maxPer <= 8 then
    local r = call('ZRANGE', key, nth, '-1', 'WITHSCORES')
    local k, e = #r / 2, 0
    while e < k and tonumber(r[2 * e + 2]) <= now do e = e + 1 end
    if e == 0 and k == maxPer then
      c, full, fullN = maxPer, r[2], tonumber(r[2])
    else
      if e > 0 then expired = expired + call('ZREMRANGEBYSCORE', key, '-inf', nowS) end
      c = k - e
    end
  else
    local r = call('ZRANGE', key, nth, nth, 'WITHSCORES')
    fullN = r[2] and tonumber(r[2])
    if fullN and fullN > now then
      c, full = maxPer, r[2]
    elseif r[2] then
      -- It and every older lease have expired: after pruning, fewer than maxPer.
      expired = expired + call('ZREMRANGEBYSCORE', key, '-inf', nowS)
      c = call('ZCARD', key)
    else
      c = call('ZCARD', key)
      if c > 0 then
        local live = call('ZCOUNT', key, '(' .. nowS, '+inf')
        if live < c then expired = expired + call('ZREMRANGEBYSCORE', key, '-inf', nowS) end
        c = live
      end
    end
  end
  if full then
    if not hint or fullN < hint then hint, hintS = fullN, full end
  elseif c < bestCount then
    best, bestCount = i, c
    -- Nothing beats an empty pod and ties go to the first: the decision is made.
    -- Later candidates are left as they are (no count of theirs can matter).
    if c == 0 then break end
  end
end

if best == 0 then
  -- Every candidate is full (none had room): remember it for the next refusals.
  -- h = the earliest expiry that can free a slot; only an integer score (all the
  -- scripts write) of 13 digits makes a well-formed hint.
  if hinting and #hintS == 13 and not string.find(hintS, '%D') then
    call('HSET', KEYS[2], 'hint:full', hintS .. string.format('%03d', maxPer)
      .. table.concat(KEYS, '\0', 4, nkeys))
  end
  if expired > 0 then call('HINCRBY', KEYS[2], 'expired', format('%d', expired)) end
  call('HINCRBY', KEYS[2], 'rejected_capacity', '1')
  local retry = 0
  if hint then retry = math.max(1, hint - now) end
  return { 'FULL', '', 0, retry, rateRemaining }
end

-- 3. Admit: lease on the chosen pod, window entry, counters.
local key, pod = KEYS[3 + best], ARGV[5 + best]
local active = bestCount + call('ZADD', key, format('%d', now + ttl), id)
call('PEXPIRE', key, format('%d', ttl + KEY_MARGIN_MS))
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
    rateRemaining = limit - (card - call('ZREMRANGEBYSCORE', KEYS[1], '-inf', format('%d', now - window)))
  end
  call('ZADD', KEYS[1], nowS, id)
  rateRemaining = rateRemaining - 1
end
if expired > 0 then call('HINCRBY', KEYS[2], 'expired', format('%d', expired)) end
call('HINCRBY', KEYS[2], 'admitted', '1')
return { 'ADMITTED', pod, active, 0, rateRemaining }
