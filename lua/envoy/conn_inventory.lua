-- conn_inventory.lua (a Redis script, run by filter.lua only when
-- settings.connection_inventory is on): records who is connected where, pipelined
-- right behind admit.lua in the same round trip. It cannot see admit's reply, so it
-- looks for the connection's lease among the candidates admit was given: found =>
-- admitted there, write the hash; not found => refused, write nothing.
-- KEYS[1] {tag}:conn:<id> (hash), KEYS[2..1+n] lease sets of the n candidates
-- ARGV[1] connection id, ARGV[2] lease TTL ms, ARGV[3] proxy, ARGV[4] client address,
-- ARGV[5..4+n] pod ids in the order of the keys
-- Reply: the pod id written, or "" when the connection was not admitted.
-- The hash expires with the lease (the filter PEXPIREs it on every renewal and
-- DELetes it on release).
if #KEYS < 1 or #ARGV ~= #KEYS + 3 then
  return redis.error_reply('ERR conn_inventory.lua: expected 1+n KEYS and 4+n ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local ttl = ARGV[2]
if #ttl > 15 or not string.find(ttl, '^%d+$') or tonumber(ttl) < 1 then
  return redis.error_reply('ERR conn_inventory.lua: ARGV[2] lease TTL ms must be an integer >= 1, got \'' .. ttl .. '\'')
end
local id = ARGV[1]
for i = 2, #KEYS do
  if redis.call('ZSCORE', KEYS[i], id) then
    local t = redis.call('TIME')
    local pod = ARGV[3 + i]
    redis.call('HSET', KEYS[1], 'pod', pod, 'proxy', ARGV[3], 'client', ARGV[4],
      'start_ms', tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
    redis.call('PEXPIRE', KEYS[1], tonumber(ttl))
    return pod
  end
end
return ''
