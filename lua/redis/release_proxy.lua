-- release_proxy.lua: give back the leases of one proxy (or of one set of its
-- connections). Run by lua/cli/drain.lua from a terminating Envoy's preStop hook,
-- right before SIGTERM resets its WebSockets (Envoy's Lua filter has no hook on reset,
-- so without this their leases would hold slots until they expire), and by the filter
-- for admissions whose answer was lost (their pod is unknown).
--
-- KEYS[1] leases, KEYS[2] load, KEYS[3] stats
-- ARGV[1] proxy id, ARGV[2] scan cursor ('0' to start), ARGV[3..] optional: only these
--         connection ids
-- One step of a ZSCAN over the leases (COUNT 1000) whose members start with
-- `<proxy>|` (an exact prefix compare: proxy `a` never matches `ab|...`): each such
-- lease (with ids given: each one of those ids) is removed and its pod's count lowered;
-- `released` + the number removed. A lease that expired but was not given back yet
-- counts too, as in release.lua.
-- Reply: { next cursor, number removed }; the caller repeats with the cursor until it
-- is '0'. ZSCAN returns every lease present during the whole scan at least once.
-- Bad arguments give `ERR release_proxy.lua: ...` naming the argument and the value;
-- nothing is written on a bad call.
if #KEYS ~= 3 or #ARGV < 2 then
  return redis.error_reply('ERR release_proxy.lua: expected 3 KEYS and 2+ ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local proxy, cursor = ARGV[1], ARGV[2]
-- The proxy id filter.lua derives (POD_NAME or the host name, lower-cased, any other
-- character replaced by '-'): a DNS-1123-like name, so it never contains the '|' that
-- ends it inside a connection id, nor a glob character of the MATCH pattern below.
if #proxy < 1 or #proxy > 253 or string.find(proxy, '[^a-z0-9.-]') then
  return redis.error_reply('ERR release_proxy.lua: ARGV[1] proxy id must be 1-253 characters of a-z, 0-9, '
    .. '\'.\' and \'-\' (a DNS-1123 name, as filter.lua derives it from POD_NAME), got \'' .. proxy .. '\'')
end
if #cursor > 20 or not string.find(cursor, '^%d+$') then
  return redis.error_reply('ERR release_proxy.lua: ARGV[2] scan cursor must be digits, got \'' .. cursor .. '\'')
end
local only
if #ARGV > 2 then
  only = {}
  for i = 3, #ARGV do only[ARGV[i]] = true end
end
local call = redis.call
local prefix = proxy .. '|'
local plen = #prefix
local r = call('ZSCAN', KEYS[1], cursor, 'MATCH', prefix .. '*', 'COUNT', '1000')
local found, mine = r[2], {}
for i = 1, #found, 2 do
  local m = found[i]
  if string.sub(m, 1, plen) == prefix then
    local sp = string.find(m, ' ', 1, true)
    if sp and (not only or only[string.sub(m, 1, sp - 1)]) then mine[#mine + 1] = m end
  end
end
local removed = 0
for _, m in ipairs(mine) do
  -- ZSCAN may return a member twice: count each removal once.
  if call('ZREM', KEYS[1], m) == 1 then
    call('ZINCRBY', KEYS[2], '-1', string.sub(m, string.find(m, ' ', 1, true) + 1))
    removed = removed + 1
  end
end
if removed > 0 then
  call('HINCRBY', KEYS[3], 'released', string.format('%d', removed))
  -- The proxy's lease count (stats field leases:<proxy>, as admit.lua keeps it).
  local field = 'leases:' .. proxy
  if call('HINCRBY', KEYS[3], field, string.format('%d', -removed)) <= 0 then call('HDEL', KEYS[3], field) end
end
return { r[1], removed }
