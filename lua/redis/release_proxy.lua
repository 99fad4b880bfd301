-- release_proxy.lua: give back every lease one proxy holds. Run by lua/envoy/drain.lua
-- from a terminating Envoy's preStop hook, right before SIGTERM resets its WebSockets
-- (Envoy's Lua filter has no hook on reset, so without this their leases would hold
-- slots until they expire: up to the lease TTL after every rollout).
--
-- Two calls, like snapshot.lua (Redis Cluster safe: every key it touches is declared):
--   1. SMEMBERS {tag}:pods                                   -> pod ids p1..pn
--   2. EVALSHA <sha> 2+n {tag}:stats {tag}:pods {tag}:pod:<p1> ... {tag}:pod:<pn>
--                        <proxy> <p1> ... <pn>
-- KEYS[1] stats, KEYS[2] pod index, KEYS[3..2+n] lease sets, in the order of the pod ids
-- ARGV[1] proxy id, ARGV[2..1+n] pod ids (n may be 0)
--
-- Removes, on each given pod, every lease whose connection id starts with `<proxy>|`
-- (an exact prefix compare: proxy `a` never matches `ab|...`; a lease that expired but
-- was not pruned yet counts too, as in release.lua). Then:
--   * stats `released` + the number removed (absent field untouched when 0);
--   * when it removed any lease, admit.lua's "all full" hint (stats field hint:full) is
--     deleted, as release.lua does: the hint must never claim a pod full while it has a
--     free slot;
--   * a pod whose lease set is empty afterwards leaves the index (as snapshot.lua does;
--     an entry whose set had already expired goes too).
-- Leases of other proxies are not touched (not even pruned: admit/snapshot count those).
-- Reply: the number of leases removed (integer >= 0).
--
-- Any subset of the index may be passed (a caller with many pods sends chunks); a pod
-- that is not in the index is fine. A lease this proxy takes between the two calls, on a
-- pod not in the list, is not released (it expires by its TTL).
-- Bad arguments give `ERR release_proxy.lua: ...` naming the argument and the value;
-- nothing is written on a bad call.
-- Cost: O(leases on the given pods) inside Redis (every member is read and compared).
local nkeys, nargs = #KEYS, #ARGV
if nkeys < 2 or nargs ~= nkeys - 1 then
  return redis.error_reply('ERR release_proxy.lua: expected 2+n KEYS and 1+n ARGV for n pods, got '
    .. nkeys .. ' KEYS and ' .. nargs .. ' ARGV')
end
local proxy = ARGV[1]
-- The proxy id filter.lua derives (POD_NAME or the host name, lower-cased, any other
-- character replaced by '-'): a DNS-1123-like name, so it never contains the '|' that
-- ends it inside a connection id. A constant pattern: nothing from the input is one.
if #proxy < 1 or #proxy > 253 or string.find(proxy, '[^a-z0-9.-]') then
  return redis.error_reply('ERR release_proxy.lua: ARGV[1] proxy id must be 1-253 characters of a-z, 0-9, '
    .. '\'.\' and \'-\' (a DNS-1123 name, as filter.lua derives it from POD_NAME), got \'' .. proxy .. '\'')
end
local n = nkeys - 2
for i = 1, n do
  local pod, key = ARGV[1 + i], KEYS[2 + i]
  if pod == '' or string.sub(key, -(#pod + 5)) ~= ':pod:' .. pod then
    return redis.error_reply('ERR release_proxy.lua: KEYS[' .. (2 + i) .. '] \'' .. key
      .. '\' is not the lease set of pod ARGV[' .. (1 + i) .. '] \'' .. pod
      .. '\' (expected a key ending in \':pod:' .. pod .. '\')')
  end
end

local call = redis.call
local prefix = proxy .. '|'
local plen = #prefix
local sub = string.sub
local BATCH = 500 -- members per ZREM (unpack() of a large table would overflow the C stack)
local total = 0
for i = 1, n do
  local key, pod = KEYS[2 + i], ARGV[1 + i]
  local members = call('ZRANGE', key, '0', '-1')
  local mine, removed = {}, 0
  for j = 1, #members do
    local m = members[j]
    if sub(m, 1, plen) == prefix then
      mine[#mine + 1] = m
      if #mine == BATCH then
        removed = removed + call('ZREM', key, unpack(mine))
        mine = {}
      end
    end
  end
  if #mine > 0 then removed = removed + call('ZREM', key, unpack(mine)) end
  -- ZREM of the last member deletes the key: the set is empty exactly when every
  -- member was ours.
  if removed == #members then call('SREM', KEYS[2], pod) end
  total = total + removed
end
if total > 0 then
  call('HINCRBY', KEYS[1], 'released', tostring(total))
  -- Slots freed: admit.lua's "all full" hint may no longer be true.
  call('HDEL', KEYS[1], 'hint:full')
end
return total
