#!lua name=ws_admission
-- The admission state's only code: a Redis Functions library (Redis >= 7.0), loaded by an
-- administrator (`FUNCTION LOAD REPLACE`) and called by the proxies with FCALL, so the
-- proxies' ACL user never holds SCRIPT or EVAL* rights. Contract, key schema and the
-- reasons behind each rule: lua/redis/README.md.
--
-- Every key a function touches is in its KEYS, all under one hash tag; no key name is
-- built from data. Time is Redis's own (TIME). Every loop is bounded by a constant or by
-- the number of arguments, and every function refuses more than MAX_ITEMS of them.

-- redis.call exists only while a function runs, not while the library loads.
local function call(...) return redis.call(...) end
-- Nor are string, math or bit while it loads: look them up when called.
local function format(...) return string.format(...) end
local function find(...) return string.find(...) end
local function sub(...) return string.sub(...) end
local function byte(...) return string.byte(...) end
local function char(...) return string.char(...) end
local function rep(...) return string.rep(...) end
local function floor(x) return math.floor(x) end

-- Bounds of one call (a function blocks Redis while it runs).
local MAX_ITEMS = 1000      -- lease operations, pods or known proxies per call
local MAX_SLOTS = 1024      -- proxies with a registered host set at once
local EXPIRE_BATCH = 64     -- expired leases given back per admission before it decides
local SCAN_BATCH = 16       -- members of `load` read per step of the least-loaded scan
local CLEANUP_COUNT = 200   -- `reach` entries visited per cleanup step of a dead slot
-- An agent that has not beaten for this long is dead: its slot stops counting.
local AGENT_TTL_MS = 30000
-- Before every proxy re-registered after a state loss, nothing is admitted; a proxy that
-- never comes back (dead) holds that up for this long at most.
local RECOVERY_MAX_MS = 10000
-- ... and never shorter than this: every live agent beats every second, so by then each
-- has noticed the loss and asked to be waited for, known to the first one back or not.
local RECOVERY_MIN_MS = 3000
local RECOVERY_RETRY_MS = 1000
local MAX_ID, MAX_POD, MAX_PROXY = 200, 64, 253

-------------------------------------------------------------------------------
-- Shared helpers
-------------------------------------------------------------------------------

local function now_ms()
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end
local function ms(n) return format('%d', n) end

local function err(fn, msg) return redis.error_reply('ERR ' .. fn .. ': ' .. msg) end
local function shown(v) return sub(tostring(v), 1, 80) end

local function expect_counts(fn, keys, nkeys, args, min_args, max_args)
  if #keys ~= nkeys or #args < min_args or #args > max_args then
    local want = min_args == max_args and tostring(min_args) or (min_args .. '-' .. max_args)
    return err(fn, 'expected ' .. nkeys .. ' keys and ' .. want .. ' arguments, got ' .. #keys .. ' keys and ' .. #args .. ' arguments')
  end
end

-- An integer argument in [min, 1e15); else nil and the error reply.
local function int_arg(fn, args, i, what, min)
  local v = tonumber(args[i])
  -- tonumber() also takes ' 5' or '1e3' at their value; NaN fails every comparison.
  if not (v and v >= min and v < 1e15 and v % 1 == 0) then
    return nil, err(fn, format("argument %d (%s) must be an integer >= %d, got '%s'", i, what, min, shown(args[i])))
  end
  return v
end

-- The proxy id filter.lua derives from POD_NAME: a DNS-1123-like name (no '|', no glob).
local function valid_proxy(p) return #p >= 1 and #p <= MAX_PROXY and not find(p, '[^a-z0-9.-]') end
local function proxy_arg(fn, args, i)
  if not valid_proxy(args[i]) then
    return nil, err(fn, format("argument %d (proxy id) must be 1-%d characters of a-z, 0-9, '.' and '-', got '%s'",
      i, MAX_PROXY, shown(args[i])))
  end
  return args[i]
end
-- A connection id: <proxy>|<worker>|<counter>|<random> (keys.lua), no space.
local function valid_id(id) return #id >= 1 and #id <= MAX_ID and not find(id, ' ', 1, true) end
local function valid_pod(pod) return #pod >= 1 and #pod <= MAX_POD and not find(pod, ' ', 1, true) end

-- The proxy of a connection id: up to its first '|'.
local function proxy_of(id)
  local bar = find(id, '|', 1, true)
  return bar and sub(id, 1, bar - 1) or 'unknown'
end
local function pod_of(member) return sub(member, find(member, ' ', 1, true) + 1) end

-- The client of a connection id: its fifth part, 16 hex digits (the filter's hash of the
-- client's identity, lua/envoy/client_identity.lua); nil for an id without one.
local function client_of(id)
  local c = string.match(id, '^[^|]*|[^|]*|[^|]*|[^|]*|(%x+)$')
  return c and #c == 16 and c or nil
end

-- A client's open leases (`clients`: client -> count, absent at 0).
local function count_client(kClients, id, delta)
  local c = kClients and client_of(id)
  if not c then return end
  if call('HINCRBY', kClients, c, ms(delta)) <= 0 then call('HDEL', kClients, c) end
end

-- Stats field leases:<proxy>: the leases held by that proxy's connections (absent at 0).
local function count_proxy(kStats, proxy, delta)
  if call('HINCRBY', kStats, 'leases:' .. proxy, ms(delta)) <= 0 then call('HDEL', kStats, 'leases:' .. proxy) end
end

-- Slot bitmasks (`reach`): byte i holds slots 8(i-1) .. 8(i-1)+7, trailing zero bytes trimmed.
local function bit_test(mask, slot)
  if not mask then return false end
  local b = byte(mask, floor(slot / 8) + 1)
  return b ~= nil and bit.band(b, bit.lshift(1, slot % 8)) ~= 0
end
local function bit_set(mask, slot, on)
  mask = mask or ''
  local i = floor(slot / 8) + 1
  if #mask < i then
    if not on then return mask end
    mask = mask .. rep('\0', i - #mask)
  end
  local m = bit.lshift(1, slot % 8)
  local b = on and bit.bor(byte(mask, i), m) or bit.band(byte(mask, i), bit.bnot(m))
  mask = sub(mask, 1, i - 1) .. char(b) .. sub(mask, i + 1)
  local n = #mask
  while n > 0 and byte(mask, n) == 0 do n = n - 1 end
  return sub(mask, 1, n)
end

-- A pod leaves `load` (and `down`) once nobody reaches it and it holds no lease.
local function forget_if_unused(kLoad, kReach, kDown, pod)
  local c = call('ZSCORE', kLoad, pod)
  if (not c or tonumber(c) <= 0) and call('HEXISTS', kReach, pod) == 0 then
    call('ZREM', kLoad, pod)
    if kDown then call('ZREM', kDown, pod) end
  end
end

-- One lease less on `member` ("<id> <pod>"), already removed from `leases`.
local function lease_gone(k, member)
  local pod = pod_of(member)
  if tonumber(call('ZINCRBY', k.load, '-1', pod)) <= 0 then forget_if_unused(k.load, k.reach, k.down, pod) end
  local id = sub(member, 1, find(member, ' ', 1, true) - 1)
  if k.inventory then call('HDEL', k.inventory, id) end
  count_client(k.clients, id, -1)
end

-- Gives back up to `max` leases whose expiry passed; returns how many and whether more remain.
local function expire(k, now, max)
  local gone = call('ZRANGEBYSCORE', k.leases, '-inf', ms(now), 'LIMIT', 0, max)
  if #gone == 0 then return 0, false end
  local byProxy = {}
  call('ZREM', k.leases, unpack(gone))
  for i = 1, #gone do
    lease_gone(k, gone[i])
    local p = proxy_of(gone[i])
    byProxy[p] = (byProxy[p] or 0) - 1
  end
  for p, d in pairs(byProxy) do count_proxy(k.stats, p, d) end
  call('HINCRBY', k.stats, 'expired', ms(#gone))
  return #gone, #gone == max
end

-- Sliding window check: nil when one more fits (and the live count, exact when it
-- reached the limit, else an upper bound), else the ms until one more fits.
local function window_full(kRate, limit, window, now)
  local card = call('ZCARD', kRate)
  if card < limit then return nil, card, card end
  local live = '(' .. ms(now - window)
  local used = call('ZCOUNT', kRate, live, '+inf')
  if used < limit then return nil, used, card end
  -- One more fits once the (used-limit)th live entry (0-based; used > limit only after the
  -- limit was lowered) has left the window.
  local e = call('ZRANGEBYSCORE', kRate, live, '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
  return e[2] and math.max(1, tonumber(e[2]) + window - now) or 1
end

-- Appends `id` to a window after trimming what left it; the entries left afterwards.
local function window_add(kRate, limit, window, now, id, card)
  local used = card
  if card > 0 then used = card - call('ZREMRANGEBYSCORE', kRate, '-inf', ms(now - window)) end
  call('ZADD', kRate, ms(now), id)
  return limit - used - 1
end

-- Each client's own sliding window: `crate` holds "<client>:<time, 15 digits>:<id>" (all at
-- score 0, so one client's entries are one lexical range, in time order), `crate_t` the same
-- entries as id -> time (so the oldest of every client leave in time order, and an entry is
-- found by its id alone).
local function crate_member(client, t, id) return client .. ':' .. format('%015d', t) .. ':' .. id end

-- Entries that left the window go, at most `max` (the oldest first).
local function crate_trim(k, now, window, max)
  local old = call('ZRANGEBYSCORE', k.crate_t, '-inf', ms(now - window), 'WITHSCORES', 'LIMIT', 0, max)
  for i = 1, #old, 2 do
    local c = client_of(old[i])
    if c then call('ZREM', k.crate, crate_member(c, tonumber(old[i + 1]), old[i])) end
    call('ZREM', k.crate_t, old[i])
  end
end

-- nil when the client may start one more upgrade now, else the ms until it may.
local function client_rate_full(k, client, limit, window, now)
  local from, to = '[' .. client .. ':' .. format('%015d', now - window + 1), '(' .. client .. ';'
  local used = call('ZLEXCOUNT', k.crate, from, to)
  if used < limit then return nil end
  local e = call('ZRANGEBYLEX', k.crate, from, to, 'LIMIT', used - limit, 1)[1]
  local t = e and tonumber(string.match(e, '^%x+:(%d+):'))
  return t and math.max(1, t + window - now) or 1000
end

-- The entry of an upgrade that never reached a backend leaves the client's window.
local function crate_forget(k, id)
  local c, t = client_of(id), call('ZSCORE', k.crate_t, id)
  if not (c and t) then return end
  call('ZREM', k.crate, crate_member(c, tonumber(t), id))
  call('ZREM', k.crate_t, id)
end

-------------------------------------------------------------------------------
-- ws_admit: one decision
-------------------------------------------------------------------------------

-- The least-loaded pod this proxy's slot reaches and that is not penalised; nil when the
-- first pod at the limit comes first (every pod after it is at the limit too).
local function least_loaded(k, slot, maxPer, now, anyDown)
  local from = 0
  while true do
    local r = call('ZRANGE', k.load, from, from + SCAN_BATCH - 1, 'WITHSCORES')
    if #r == 0 then return nil end
    local removed = 0
    for i = 1, #r, 2 do
      local pod, c = r[i], tonumber(r[i + 1])
      if c >= maxPer then return nil end
      local mask = call('HGET', k.reach, pod)
      if bit_test(mask, slot) then
        local penalty = anyDown and call('ZSCORE', k.down, pod)
        if not penalty or tonumber(penalty) <= now then return pod, c end
      elseif not mask and c <= 0 then
        -- Nobody reaches it and it holds nothing: gone from the fleet.
        call('ZREM', k.load, pod)
        removed = removed + 1
      end
    end
    from = from + #r / 2 - removed
  end
end

-- The arguments of ws_admit, checked: a table of them, or nil and the error reply.
local function admit_args(F, args)
  local a = {}
  local fields = {
    { 'limit', 'rate limit per window, 0 = off', 0 }, { 'window', 'window ms', 1 },
    { 'maxPer', 'max connections per pod', 1 }, { 'ttl', 'lease TTL ms', 1 },
  }
  for i, f in ipairs(fields) do
    local v, e = int_arg(F, args, i, f[2], f[3])
    if not v then return nil, e end
    a[f[1]] = v
  end
  a.id = args[5]
  if not valid_id(a.id) then
    return nil, err(F, format("argument 5 (connection id) must be 1-%d characters without spaces, got '%s'", MAX_ID, shown(a.id)))
  end
  local client_fields = {
    { 'clientMax', 'max connections per client, 0 = off' }, { 'clientPercent', 'max share of the slots per client (%), 0 = off' },
    { 'clientRate', 'rate limit per client per window, 0 = off' },
  }
  for i, f in ipairs(client_fields) do
    local v, e = int_arg(F, args, 5 + i, f[2], 0)
    if not v then return nil, e end
    a[f[1]] = v
  end
  if a.clientPercent > 100 then
    return nil, err(F, format("argument 7 (max share of the slots per client (%%), 0 = off) must be at most 100, got '%s'", shown(args[7])))
  end
  a.address = args[9]
  if a.address and (#a.address > 64 or find(a.address, '[^%w%.:%[%]-]')) then
    return nil, err(F, format("argument 9 (client address for the inventory) must be at most 64 characters of letters, digits, "
      .. "'.', ':', '[', ']' and '-', got '%s'", shown(a.address)))
  end
  return a
end

-- The client's own limits (its open sockets, its upgrades per window): nil, or the retry ms.
-- `slots`: the caller's pods x the per-pod limit (a share of them is the client's cap).
local function client_refusal(k, a, client, slots, now)
  local cap = a.clientMax
  if a.clientPercent > 0 and slots then
    local share = math.max(1, floor(slots * a.clientPercent / 100))
    if cap == 0 or share < cap then cap = share end
  end
  if cap > 0 and tonumber(call('HGET', k.clients, client) or '0') >= cap then return 1000 end
  if a.clientRate > 0 then return client_rate_full(k, client, a.clientRate, a.window, now) end
  return nil
end

-- The global window: nil, the slots left after this upgrade (-1: no rate limit) and the
-- window's size (for window_add); or the ms until one more fits.
local function global_rate(k, a, now)
  if a.limit == 0 then return nil, -1, 0 end
  local retry, used, card = window_full(k.rate, a.limit, a.window, now)
  if retry then return retry end
  return nil, a.limit - used, card
end

-- Leases past their expiry give their slots back; then the least-loaded reachable pod,
-- refusing only on exact counts. The pod and its count, or nil.
local function choose_pod(k, slot, maxPer, now)
  local _, more = expire(k, now, EXPIRE_BATCH)
  local anyDown = call('ZCARD', k.down) > 0
  local pod, count = least_loaded(k, slot, maxPer, now, anyDown)
  while not pod and more do
    _, more = expire(k, now, 1000)
    pod, count = least_loaded(k, slot, maxPer, now, anyDown)
  end
  return pod, count
end

-- The lease and every count it is in, the window entries, the inventory, the counter.
-- Returns the global window's slots left (-1: no rate limit).
local function take_lease(k, a, client, pod, now, card)
  local id = a.id
  call('ZADD', k.leases, ms(now + a.ttl), id .. ' ' .. pod)
  call('ZINCRBY', k.load, '1', pod)
  count_proxy(k.stats, proxy_of(id), 1)
  count_client(k.clients, id, 1)
  local rateRemaining = -1
  if a.limit > 0 then rateRemaining = window_add(k.rate, a.limit, a.window, now, id, card) end
  if client and a.clientRate > 0 then
    call('ZADD', k.crate, '0', crate_member(client, now, id))
    call('ZADD', k.crate_t, ms(now), id)
  end
  if a.address then call('HSET', k.inventory, id, pod .. ' ' .. proxy_of(id) .. ' ' .. a.address .. ' ' .. ms(now)) end
  call('HINCRBY', k.stats, 'admitted', '1')
  return rateRemaining
end

local function admit(keys, args)
  local F = 'ws_admit'
  local bad = expect_counts(F, keys, 11, args, 8, 9)
  if bad then return bad end
  local a, e = admit_args(F, args)
  if not a then return e end
  local k = {
    rate = keys[1], stats = keys[2], leases = keys[3], load = keys[4], reach = keys[5], down = keys[6], agents = keys[7],
    inventory = keys[8], clients = keys[9], crate = keys[10], crate_t = keys[11],
  }
  local now, id = now_ms(), a.id

  -- 0. A state that lost leases decides nothing until every proxy put its open streams back.
  local rec = call('HMGET', k.stats, 'epoch', 'recovering_until')
  if not rec[1] then return { 'RECOVERING', '', 0, RECOVERY_RETRY_MS, 0 } end
  if rec[2] and tonumber(rec[2]) > now then return { 'RECOVERING', '', 0, tonumber(rec[2]) - now, 0 } end

  -- 1. The client's own limits, before it can spend anything of everyone's.
  local slot = call('HGET', k.agents, 'p:' .. proxy_of(id))
  local size = slot and tonumber(call('HGET', k.agents, 'n:' .. slot) or '0')
  local client = client_of(id)
  if client and a.clientRate > 0 then crate_trim(k, now, a.window, EXPIRE_BATCH) end
  local clientRetry = client and client_refusal(k, a, client, size and size * a.maxPer, now)
  if clientRetry then
    call('HINCRBY', k.stats, 'rejected_client', '1')
    return { 'CLIENT', '', 0, clientRetry, 0 }
  end

  -- 2. The global rate limit, so a flood is refused without touching any pod.
  local retry, rateRemaining, card = global_rate(k, a, now)
  if retry then
    call('HINCRBY', k.stats, 'rejected_rate_limited', '1')
    return { 'RATE_LIMITED', '', 0, retry, 0 }
  end

  -- 3. The caller's healthy hosts: its proxy's slot in `reach`.
  if not slot or size == 0 then return { 'NOHOSTS', '', 0, 0, rateRemaining } end

  -- 4. The least-loaded pod with room.
  local pod, count = choose_pod(k, tonumber(slot), a.maxPer, now)
  if not pod then
    call('HINCRBY', k.stats, 'rejected_capacity', '1')
    -- A lower bound of the wait: the earliest lease expiry (0: no lease at all).
    local first = call('ZRANGE', k.leases, 0, 0, 'WITHSCORES')
    return { 'FULL', '', 0, first[2] and math.max(1, tonumber(first[2]) - now) or 0, rateRemaining }
  end

  -- 5. Admit.
  return { 'ADMITTED', pod, count + 1, 0, take_lease(k, a, client, pod, now, card) }
end

-------------------------------------------------------------------------------
-- ws_leases: what the proxies' own record says of their streams
-------------------------------------------------------------------------------

-- The triples <op> <connection id> <pod> from argument 3 on: nil, or the error reply.
local function bad_lease_ops(F, args)
  for i = 3, #args, 3 do
    local op, id, pod = args[i], args[i + 1], args[i + 2]
    if op ~= 'R' and op ~= 'X' and op ~= 'F' then
      return err(F, format("argument %d (operation) must be R (renew), X (release) or F (failed upgrade), got '%s'", i, shown(op)))
    end
    if not valid_id(id) then
      return err(F, format("argument %d (connection id) must be 1-%d characters without spaces, got '%s'", i + 1, MAX_ID, shown(id)))
    end
    if not valid_pod(pod) then
      return err(F, format("argument %d (pod) must be 1-%d characters without spaces, got '%s'", i + 2, MAX_POD, shown(pod)))
    end
  end
end

-- R: the stream is open (Envoy said so): its lease exists afterwards, whatever the limit.
-- True when it was put back, false when renewed.
local function renew_lease(k, now, ttl, id, pod)
  local member = id .. ' ' .. pod
  local exp = call('ZSCORE', k.leases, member)
  if exp and tonumber(exp) > now then
    -- Never earlier than it was (a lowered TTL during a rollout).
    if tonumber(exp) < now + ttl then call('ZADD', k.leases, 'XX', ms(now + ttl), member) end
    return false
  end
  -- Lost (a state loss) or lapsed (renewals stopped longer than the TTL): put back.
  call('ZADD', k.leases, ms(now + ttl), member)
  if not exp then
    call('ZINCRBY', k.load, '1', pod)
    count_proxy(k.stats, proxy_of(id), 1)
    count_client(k.clients, id, 1)
  end
  return true
end

-- X and F: the lease goes, if it is there; true when it was.
local function release_lease(k, id, pod)
  local member = id .. ' ' .. pod
  if call('ZREM', k.leases, member) ~= 1 then return false end
  lease_gone(k, member)
  count_proxy(k.stats, proxy_of(id), -1)
  return true
end

-- F: the upgrade never reached a backend: it spends no rate budget, and its pod is passed
-- over by every proxy for a while (dead, or leaving the fleet).
local function forget_failed_upgrade(k, now, penalty, id, pod)
  call('ZREM', k.rate, id)
  crate_forget(k, id)
  if penalty > 0 then call('ZADD', k.down, 'GT', ms(now + penalty), pod) end
end

local function leases(keys, args)
  local F = 'ws_leases'
  local bad = expect_counts(F, keys, 10, args, 2, 2 + 3 * MAX_ITEMS)
  if bad then return bad end
  if (#args - 2) % 3 ~= 0 then
    return err(F, 'expected lease TTL ms, penalty ms, then triples <op> <connection id> <pod>; got ' .. #args .. ' arguments')
  end
  local ttl, e1 = int_arg(F, args, 1, 'lease TTL ms', 1)
  if not ttl then return e1 end
  local penalty, e2 = int_arg(F, args, 2, 'penalty ms', 0)
  if not penalty then return e2 end
  local e3 = bad_lease_ops(F, args)
  if e3 then return e3 end
  local k = {
    rate = keys[1], leases = keys[2], load = keys[3], stats = keys[4], reach = keys[5], down = keys[6], inventory = keys[7],
    clients = keys[8], crate = keys[9], crate_t = keys[10],
  }
  local now = now_ms()
  local renewed, readded, released, failed = 0, 0, 0, 0
  for i = 3, #args, 3 do
    local op, id, pod = args[i], args[i + 1], args[i + 2]
    if op == 'R' then
      if renew_lease(k, now, ttl, id, pod) then readded = readded + 1 else renewed = renewed + 1 end
    else
      if release_lease(k, id, pod) then released = released + 1 end
      if op == 'F' then
        forget_failed_upgrade(k, now, penalty, id, pod)
        failed = failed + 1
      end
    end
  end
  if readded > 0 then call('HINCRBY', k.stats, 'reregistered', ms(readded)) end
  if released > 0 then call('HINCRBY', k.stats, 'released', ms(released)) end
  if failed > 0 then call('HINCRBY', k.stats, 'failed_upstream', ms(failed)) end
  return { renewed, readded, released, failed }
end

-------------------------------------------------------------------------------
-- ws_hosts: a proxy's healthy hosts, as bits of its slot in `reach`
-------------------------------------------------------------------------------

local function slot_arg(F, args, i)
  local slot, e = int_arg(F, args, i, 'slot', 0)
  if not slot then return nil, e end
  if slot >= MAX_SLOTS then return nil, err(F, format("argument %d (slot) must be below %d, got '%s'", i, MAX_SLOTS, shown(args[i]))) end
  return slot
end

-- A slot being cleaned (dead) or freed is no longer anyone's.
local function owns(kAgents, kBeats, proxy, slot)
  local beat = call('ZSCORE', kBeats, ms(slot))
  return beat and tonumber(beat) > 0 and call('HGET', kAgents, 's:' .. slot) == proxy
end

-- claim: the lowest slot nobody holds (live, or still being cleaned), owned by the proxy.
local function claim_slot(F, kAgents, kBeats, proxy, now)
  for s = 0, MAX_SLOTS - 1 do
    if call('HEXISTS', kAgents, 's:' .. s) == 0 then
      call('HSET', kAgents, 's:' .. s, proxy, 'n:' .. s, '0')
      call('ZADD', kBeats, ms(now), ms(s))
      return s
    end
  end
  return err(F, 'no free slot: ' .. MAX_SLOTS .. ' proxies hold one already (raise MAX_SLOTS in lua/redis/ws_admission.lua)')
end

-- commit: the slot becomes the proxy's for admissions.
local function commit_slot(kAgents, kBeats, proxy, slot)
  local old = call('HGET', kAgents, 'p:' .. proxy)
  call('HSET', kAgents, 'p:' .. proxy, ms(slot))
  -- The proxy's previous slot (an agent restart) is cleaned by the beats.
  if old and tonumber(old) ~= slot then call('ZADD', kBeats, 'XX', '0', old) end
  return { 'OK', tonumber(call('HGET', kAgents, 'n:' .. slot)) }
end

-- add (on) or remove: the slot's bit on each pod of arguments 4 on; how many changed.
local function set_reach(kReach, kLoad, kDown, slot, args, on)
  local changed = 0
  for i = 4, #args do
    local pod = args[i]
    local mask = call('HGET', kReach, pod)
    local was = bit_test(mask, slot)
    if was ~= on then
      local new = bit_set(mask or nil, slot, on)
      changed = changed + 1
      if new == '' then
        call('HDEL', kReach, pod)
        forget_if_unused(kLoad, kReach, kDown, pod)
      else
        call('HSET', kReach, pod, new)
        if on then call('ZADD', kLoad, 'NX', '0', pod) end
      end
    end
  end
  return changed
end

local function hosts(keys, args)
  local F = 'ws_hosts'
  local bad = expect_counts(F, keys, 5, args, 2, 3 + MAX_ITEMS)
  if bad then return bad end
  local kAgents, kBeats, kReach, kLoad, kDown = keys[1], keys[2], keys[3], keys[4], keys[5]
  local mode = args[1]
  local proxy, e1 = proxy_arg(F, args, 2)
  if not proxy then return e1 end
  local now = now_ms()

  if mode == 'claim' then return claim_slot(F, kAgents, kBeats, proxy, now) end
  if mode ~= 'add' and mode ~= 'remove' and mode ~= 'commit' then
    return err(F, format("argument 1 (mode) must be claim, add, remove or commit, got '%s'", shown(mode)))
  end
  local slot, e2 = slot_arg(F, args, 3)
  if not slot then return e2 end
  for i = 4, #args do
    if not valid_pod(args[i]) then
      return err(F, format("argument %d (pod) must be 1-%d characters without spaces, got '%s'", i, MAX_POD, shown(args[i])))
    end
  end
  -- Lost (lapsed, cleaned, or another agent's now): the caller claims a new slot.
  if not owns(kAgents, kBeats, proxy, slot) then return { 'SLOT' } end

  if mode == 'commit' then return commit_slot(kAgents, kBeats, proxy, slot) end
  local on = mode == 'add'
  local changed = set_reach(kReach, kLoad, kDown, slot, args, on)
  call('HINCRBY', kAgents, 'n:' .. slot, ms(on and changed or -changed))
  return { 'OK', changed }
end

-------------------------------------------------------------------------------
-- ws_beat: an agent is alive; housekeeping in bounded steps
-------------------------------------------------------------------------------

-- One step of clearing a dead slot's bits; true when that slot is free again.
local function clean_step(kAgents, kBeats, kReach, kLoad, kDown, slot)
  local cursor = call('HGET', kAgents, 'c:' .. slot) or '0'
  local r = call('HSCAN', kReach, cursor, 'COUNT', CLEANUP_COUNT)
  local items = r[2]
  for i = 1, #items, 2 do
    local pod, mask = items[i], items[i + 1]
    if bit_test(mask, slot) then
      local new = bit_set(mask, slot, false)
      if new == '' then
        call('HDEL', kReach, pod)
        forget_if_unused(kLoad, kReach, kDown, pod)
      else
        call('HSET', kReach, pod, new)
      end
    end
  end
  if r[1] ~= '0' then
    call('HSET', kAgents, 'c:' .. slot, r[1])
    return false
  end
  local proxy = call('HGET', kAgents, 's:' .. slot)
  if proxy and call('HGET', kAgents, 'p:' .. proxy) == ms(slot) then call('HDEL', kAgents, 'p:' .. proxy) end
  call('HDEL', kAgents, 's:' .. slot, 'n:' .. slot, 'c:' .. slot)
  call('ZREM', kBeats, ms(slot))
  return true
end

local function live_proxies(kAgents, kBeats, now)
  local out = {}
  for _, s in ipairs(call('ZRANGEBYSCORE', kBeats, '(' .. ms(now - AGENT_TTL_MS), '+inf')) do
    local p = call('HGET', kAgents, 's:' .. s)
    if p then out[#out + 1] = p end
  end
  return out
end

local function beat(keys, args)
  local F = 'ws_beat'
  local bad = expect_counts(F, keys, 7, args, 3, 3)
  if bad then return bad end
  local kStats, kAgents, kBeats, kReach, kLoad, kDown, kRecovery = keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7]
  local proxy, e1 = proxy_arg(F, args, 1)
  if not proxy then return e1 end
  local slot
  if args[2] ~= '' then
    local e2
    slot, e2 = slot_arg(F, args, 2)
    if not slot then return e2 end
  end
  if args[3] ~= '0' and args[3] ~= '1' then
    return err(F, format("argument 3 (list the live proxies) must be 0 or 1, got '%s'", shown(args[3])))
  end
  local now = now_ms()

  call('ZREMRANGEBYSCORE', kDown, '-inf', ms(now))
  -- Agents that stopped beating: their slots go to cleaning (score 0).
  local lapsed = call('ZRANGEBYSCORE', kBeats, '(0', '(' .. ms(now - AGENT_TTL_MS))
  for _, s in ipairs(lapsed) do
    call('ZADD', kBeats, 'XX', '0', s)
    -- Its proxy has no hosts from now on (a new agent registers them again).
    local p = call('HGET', kAgents, 's:' .. s)
    if p and call('HGET', kAgents, 'p:' .. p) == s then call('HDEL', kAgents, 'p:' .. p) end
  end
  local slotOk = 0
  if slot and owns(kAgents, kBeats, proxy, slot) then
    call('ZADD', kBeats, 'XX', ms(now), ms(slot))
    slotOk = 1
  end
  local dead = call('ZRANGEBYSCORE', kBeats, '0', '0', 'LIMIT', 0, 1)
  if dead[1] then clean_step(kAgents, kBeats, kReach, kLoad, kDown, tonumber(dead[1])) end

  local st = call('HMGET', kStats, 'epoch', 'recovering_until')
  local left = st[2] and math.max(0, tonumber(st[2]) - now) or 0
  if st[2] and left == 0 then
    -- A recovery past its deadline (or its minimum, with everyone known back) is over.
    call('HDEL', kStats, 'recovering_until', 'recovering_min')
    call('DEL', kRecovery)
  end
  local live = call('ZCOUNT', kBeats, '(' .. ms(now - AGENT_TTL_MS), '+inf')
  return { st[1] or '', left, slotOk, args[3] == '1' and live_proxies(kAgents, kBeats, now) or {}, live }
end

-------------------------------------------------------------------------------
-- ws_recover: after a state loss, nothing is decided until every proxy is back
-------------------------------------------------------------------------------

local function recover(keys, args)
  local F = 'ws_recover'
  local bad = expect_counts(F, keys, 2, args, 2, 3 + MAX_ITEMS)
  if bad then return bad end
  local kStats, kRecovery = keys[1], keys[2]
  local mode = args[1]
  local proxy, e1 = proxy_arg(F, args, 2)
  if not proxy then return e1 end
  local now = now_ms()
  if mode == 'begin' then
    local candidate = args[3] or ''
    if not find(candidate, '^%x+$') or #candidate ~= 16 then
      return err(F, format("argument 3 (a new epoch) must be 16 hex digits, got '%s'", shown(candidate)))
    end
    for i = 4, #args do
      if not valid_proxy(args[i]) then
        return err(F, format("argument %d (a known proxy) is not a proxy id, got '%s'", i, shown(args[i])))
      end
    end
    local st = call('HMGET', kStats, 'epoch', 'recovering_until')
    if not st[1] then
      -- The state is new (a restart without persistence, a failover to an empty replica):
      -- wait for the caller and every proxy it knew alive.
      call('HSET', kStats, 'epoch', candidate, 'recovering_until', ms(now + RECOVERY_MAX_MS),
        'recovering_min', ms(now + RECOVERY_MIN_MS))
      call('DEL', kRecovery)
      st = { candidate, ms(now + RECOVERY_MAX_MS) }
    end
    if st[2] and tonumber(st[2]) > now then
      -- Later callers add the proxies they knew; a proxy already back stays back.
      call('HSETNX', kRecovery, proxy, 'wait')
      for i = 4, #args do call('HSETNX', kRecovery, args[i], 'wait') end
    end
    return { st[1], st[2] and math.max(0, tonumber(st[2]) - now) or 0 }
  end
  if mode ~= 'done' then return err(F, format("argument 1 (mode) must be begin or done, got '%s'", shown(mode))) end
  if not call('HGET', kStats, 'recovering_until') then return 0 end
  call('HSET', kRecovery, proxy, 'done')
  local all, waiting = call('HGETALL', kRecovery), 0
  for i = 2, #all, 2 do if all[i] == 'wait' then waiting = waiting + 1 end end
  if waiting == 0 then
    local min = tonumber(call('HGET', kStats, 'recovering_min') or '0')
    if min > now then
      -- Everyone known is back; agents that were not known still have until then.
      call('HSET', kStats, 'recovering_until', ms(min))
    else
      call('HDEL', kStats, 'recovering_until', 'recovering_min')
      call('DEL', kRecovery)
    end
  end
  return waiting
end

-------------------------------------------------------------------------------
-- ws_release_proxy: a terminating proxy gives back its leases (a scan in steps)
-------------------------------------------------------------------------------

local function release_proxy(keys, args)
  local F = 'ws_release_proxy'
  local bad = expect_counts(F, keys, 7, args, 2, 2)
  if bad then return bad end
  local proxy, e1 = proxy_arg(F, args, 1)
  if not proxy then return e1 end
  local cursor = args[2]
  if #cursor > 20 or not find(cursor, '^%d+$') then
    return err(F, format("argument 2 (scan cursor) must be digits, got '%s'", shown(cursor)))
  end
  local k = { leases = keys[1], load = keys[2], stats = keys[3], reach = keys[4], down = keys[5], inventory = keys[6], clients = keys[7] }
  local prefix = proxy .. '|'
  local r = call('ZSCAN', k.leases, cursor, 'MATCH', prefix .. '*', 'COUNT', '1000')
  local found, removed = r[2], 0
  for i = 1, #found, 2 do
    local m = found[i]
    -- An exact prefix: proxy `a` never takes `ab|...`. ZSCAN may return a member twice.
    if sub(m, 1, #prefix) == prefix and call('ZREM', k.leases, m) == 1 then
      lease_gone(k, m)
      removed = removed + 1
    end
  end
  if removed > 0 then
    call('HINCRBY', k.stats, 'released', ms(removed))
    count_proxy(k.stats, proxy, -removed)
  end
  return { r[1], removed }
end

-------------------------------------------------------------------------------
-- ws_snapshot: the metrics view (made by each proxy's agent, at its own pace)
-------------------------------------------------------------------------------

local function snapshot(keys, args)
  local F = 'ws_snapshot'
  local bad = expect_counts(F, keys, 10, args, 1, 1)
  if bad then return bad end
  local window, e1 = int_arg(F, args, 1, 'window ms', 1)
  if not window then return e1 end
  local k = {
    rate = keys[1], stats = keys[2], leases = keys[3], load = keys[4], reach = keys[5],
    down = keys[6], agents = keys[7], beats = keys[8], inventory = keys[9], clients = keys[10],
  }
  local now = now_ms()
  local windowUsed = call('ZCOUNT', k.rate, '(' .. ms(now - window), '+inf')
  repeat local _, more = expire(k, now, 1000) until not more

  local pods = {}
  local load = call('ZRANGEBYSCORE', k.load, '(0', '+inf', 'WITHSCORES')
  for i = 1, #load, 2 do
    pods[#pods + 1] = load[i]
    pods[#pods + 1] = tonumber(load[i + 1])
  end
  -- Counter names never contain ':'; the fields that do are not counters.
  local all, stats, byProxy = call('HGETALL', k.stats), {}, {}
  for j = 1, #all, 2 do
    local f = all[j]
    if sub(f, 1, 7) == 'leases:' then
      byProxy[#byProxy + 1] = sub(f, 8)
      byProxy[#byProxy + 1] = tonumber(all[j + 1])
    elseif not find(f, ':', 1, true) and f ~= 'epoch' and f ~= 'recovering_until' and f ~= 'recovering_min' then
      stats[#stats + 1] = f
      stats[#stats + 1] = all[j + 1]
    end
  end
  local rec = call('HGET', k.stats, 'recovering_until')
  local gauges = {
    'pods_reachable', call('HLEN', k.reach),
    'pods_penalised', call('ZCOUNT', k.down, '(' .. ms(now), '+inf'),
    'proxies_live', call('ZCOUNT', k.beats, '(' .. ms(now - AGENT_TTL_MS), '+inf'),
    'recovering', (call('HEXISTS', k.stats, 'epoch') == 0 or (rec and tonumber(rec) > now)) and 1 or 0,
    'clients_tracked', call('HLEN', k.clients),
  }
  return { now, windowUsed, stats, pods, byProxy, gauges }
end

-------------------------------------------------------------------------------
-- ws_request_rate: plain requests' own window (limit_all_requests)
-------------------------------------------------------------------------------

local function request_rate(keys, args)
  local F = 'ws_request_rate'
  local bad = expect_counts(F, keys, 2, args, 3, 3)
  if bad then return bad end
  local limit, e1 = int_arg(F, args, 1, 'rate limit per window', 1)
  if not limit then return e1 end
  local window, e2 = int_arg(F, args, 2, 'window ms', 1)
  if not window then return e2 end
  if not valid_id(args[3]) then
    return err(F, format("argument 3 (request id) must be 1-%d characters without spaces, got '%s'", MAX_ID, shown(args[3])))
  end
  local now = now_ms()
  local retry, _, card = window_full(keys[1], limit, window, now)
  if retry then
    call('HINCRBY', keys[2], 'rejected_rate_limited', '1')
    return { 'RATE_LIMITED', retry, 0 }
  end
  return { 'ALLOWED', 0, window_add(keys[1], limit, window, now, args[3], card) }
end

redis.register_function('ws_admit', admit)
redis.register_function('ws_leases', leases)
redis.register_function('ws_hosts', hosts)
redis.register_function('ws_beat', beat)
redis.register_function('ws_recover', recover)
redis.register_function('ws_release_proxy', release_proxy)
redis.register_function('ws_snapshot', snapshot)
redis.register_function('ws_request_rate', request_rate)
