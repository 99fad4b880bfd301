-- admit.lua: one atomic WebSocket admission decision (global sliding-window rate
-- limit + the least-loaded healthy pod with a free slot + a lease on it). Contract and
-- key schema: lua/redis/README.md.
--
-- KEYS[1] rate window  KEYS[2] stats  KEYS[3] leases  KEYS[4] load  KEYS[5] views
-- KEYS[6] hosts
-- ARGV[1] rate limit (0 = off)  ARGV[2] window ms  ARGV[3] max per pod
-- ARGV[4] lease TTL ms  ARGV[5] connection id  ARGV[6] host view id
-- [ARGV[7] the state epoch the caller holds (optional)]
-- Reply {status, pod, activeOnPod, retryAfterMs, rateRemaining}; status ADMITTED,
-- RATE_LIMITED, FULL, or, with nothing decided: HOSTS (the view is not registered:
-- call register_view.lua, then ask again) and EPOCH (the epoch is not the stats field
-- `epoch:id`: Redis lost its state; {'EPOCH', current epoch or '', 0, 0, 0}).
--
-- Cost does not depend on the number of pods: the pods sit in one sorted set by lease
-- count, so the least-loaded one is its first member (O(log n)), and the host list is
-- in Redis already (register_view.lua), named by its id. Every key is in KEYS.
local call = redis.call
local tonumber = tonumber
if #KEYS ~= 6 or (#ARGV ~= 6 and #ARGV ~= 7) then
  return redis.error_reply('ERR admit.lua: expected 6 KEYS and 6 ARGV (7 with an epoch), got '
    .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local kRate, kStats, kLeases, kLoad, kViews, kHosts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local limit, window, maxPer, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- tonumber() also takes ' 5' or '1e3' at their value; NaN fails every comparison.
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
local id, view = ARGV[5], ARGV[6]
if id == '' or string.find(id, ' ', 1, true) then
  return redis.error_reply('ERR admit.lua: ARGV[5] connection id must be non-empty without spaces, got \'' .. id .. '\'')
end
if not string.find(view, '^%x+$') or #view ~= 16 then
  return redis.error_reply('ERR admit.lua: ARGV[6] host view id must be 16 hex digits, got \'' .. view .. '\'')
end

-- 0. The state the caller's connections were registered in. After a state loss (a
-- restart without persistence, a failover to an empty replica) the caller must first
-- re-register its open connections, or this decision would count none of them.
if #ARGV == 7 then
  local cur = call('HGET', kStats, 'epoch:id')
  if cur ~= ARGV[7] then return { 'EPOCH', cur or '', 0, 0, 0 } end
end

-- A view nobody used for this long is dead: its pods no longer count as anyone's
-- healthy hosts. A live view's last use is written at most once per VIEW_TOUCH_MS.
local VIEW_TTL_MS, VIEW_TOUCH_MS = 600000, 60000
-- Expired leases given back per call before a decision (all of them before a refusal).
local EXPIRE_BATCH = 64
local SCAN_BATCH = 16

local format = string.format
local t = call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local nowS = format('%d', now)

-- 1. Rate limit, checked first so a flood is refused without touching any pod.
-- An entry counts while its score > now - window. Entries that left the window are
-- trimmed when we write (on admission), so the set may hold a few stale ones: ZCARD
-- is an upper bound of the live count, and only when it reaches the limit does the
-- exact ZCOUNT decide.
local rateRemaining = -1
local card = 0
if limit > 0 then
  card = call('ZCARD', kRate)
  local used = card
  if card >= limit then
    local live = '(' .. format('%d', now - window)
    used = call('ZCOUNT', kRate, live, '+inf')
    if used >= limit then
      -- One more fits once the (used-limit)th live entry (0-based; used > limit only
      -- after the limit was lowered) has left the window.
      local e = call('ZRANGEBYSCORE', kRate, live, '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
      local retry = 1
      if e[2] then retry = math.max(1, tonumber(e[2]) + window - now) end
      call('HINCRBY', kStats, 'rejected_rate_limited', '1')
      return { 'RATE_LIMITED', '', 0, retry, 0 }
    end
  end
  rateRemaining = limit - used -- exact when card >= limit, else a lower bound
end

-- 2. The caller's healthy hosts: a registered, live view.
local seen = call('ZSCORE', kViews, view)
if not seen or tonumber(seen) <= now - VIEW_TTL_MS then return { 'HOSTS', '', 0, 0, rateRemaining } end
if tonumber(seen) <= now - VIEW_TOUCH_MS then call('ZADD', kViews, nowS, view) end

-- Leases per proxy: stats fields `leases:<proxy>` (the connection id up to its first
-- '|'), kept with every lease added or removed so the metrics never read every lease.
local function proxy_of(m)
  local bar = string.find(m, '|', 1, true)
  return bar and string.sub(m, 1, bar - 1) or 'unknown'
end
local function count_proxy(proxy, delta)
  if call('HINCRBY', kStats, 'leases:' .. proxy, delta) <= 0 then call('HDEL', kStats, 'leases:' .. proxy) end
end

-- 3. Leases past their expiry give their slot back (a proxy that died, a connection
-- whose renewals stopped): removed, and their pod's and proxy's counts lowered.
local expired = 0
local function expire(max)
  local gone = call('ZRANGEBYSCORE', kLeases, '-inf', nowS, 'LIMIT', 0, max)
  if #gone == 0 then return false end
  local byProxy = {}
  for i = 1, #gone do
    local m = gone[i]
    call('ZINCRBY', kLoad, '-1', string.sub(m, string.find(m, ' ', 1, true) + 1))
    local p = proxy_of(m)
    byProxy[p] = (byProxy[p] or 0) - 1
  end
  for p, d in pairs(byProxy) do count_proxy(p, format('%d', d)) end
  call('ZREM', kLeases, unpack(gone))
  expired = expired + #gone
  return #gone == max
end
local more = expire(EXPIRE_BATCH)

-- 4. The least-loaded pod of this view: `load` orders every pod by its lease count
-- (ties by pod id), so the first member that is in the view wins. Members that are
-- not in the view (another proxy's healthy host, a pod that left the fleet with
-- connections still open) are passed over; one with no lease left that no live view
-- holds is removed on the way, so the front of `load` stays this view's pods.
local prefix = view .. ' '
local liveViews -- other live views, read once and only when needed
local function held_elsewhere(pod)
  if not liveViews then
    liveViews = call('ZRANGEBYSCORE', kViews, '(' .. format('%d', now - VIEW_TTL_MS), '+inf')
  end
  for i = 1, #liveViews do
    local v = liveViews[i]
    if v ~= view and call('ZSCORE', kHosts, v .. ' ' .. pod) then return true end
  end
  return false
end
local function least_loaded()
  local from = 0
  while true do
    local r = call('ZRANGE', kLoad, from, from + SCAN_BATCH - 1, 'WITHSCORES')
    if #r == 0 then return nil end
    local removed = 0
    for i = 1, #r, 2 do
      local pod, c = r[i], tonumber(r[i + 1])
      if c >= maxPer then return nil end
      if call('ZSCORE', kHosts, prefix .. pod) then return pod, c end
      if c <= 0 and not held_elsewhere(pod) then
        call('ZREM', kLoad, pod)
        removed = removed + 1
      end
    end
    from = from + #r / 2 - removed
  end
end

local pod, count = least_loaded()
-- Refuse only on exact counts: first every expired lease goes.
while not pod and more do
  more = expire(1000)
  pod, count = least_loaded()
end
if expired > 0 then call('HINCRBY', kStats, 'expired', format('%d', expired)) end

if not pod then
  call('HINCRBY', kStats, 'rejected_capacity', '1')
  -- A lower bound of the wait: the earliest expiry of any lease (slots usually free
  -- sooner, when connections close); 0 when no lease is held at all.
  local first = call('ZRANGE', kLeases, 0, 0, 'WITHSCORES')
  local retry = 0
  if first[2] then retry = math.max(1, tonumber(first[2]) - now) end
  return { 'FULL', '', 0, retry, rateRemaining }
end

-- 5. Admit: the lease, the pod's count, the window entry, the counter.
call('ZADD', kLeases, format('%d', now + ttl), id .. ' ' .. pod)
call('ZINCRBY', kLoad, '1', pod)
call('HINCRBY', kStats, 'leases:' .. proxy_of(id), '1')
if limit > 0 then
  -- Trim what left the window; the removed count makes rateRemaining exact. The set
  -- needs no TTL: trimmed on every admission, it never holds more than `limit`
  -- entries, and one admission later it is current.
  if card > 0 then
    rateRemaining = limit - (card - call('ZREMRANGEBYSCORE', kRate, '-inf', format('%d', now - window)))
  end
  call('ZADD', kRate, nowS, id)
  rateRemaining = rateRemaining - 1
end
call('HINCRBY', kStats, 'admitted', '1')
return { 'ADMITTED', pod, count + 1, 0, rateRemaining }
