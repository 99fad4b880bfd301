-- conn_inventory.lua (run by filter.lua only when settings.connection_inventory is on,
-- right after an ADMITTED answer): records who is connected where, if the lease is
-- still held.
-- KEYS[1] {tag}:conn:<id> (hash), KEYS[2] leases
-- ARGV[1] connection id, ARGV[2] pod id, ARGV[3] lease TTL ms, ARGV[4] proxy,
-- ARGV[5] client address
-- Reply: 1 if the hash was written, 0 when the lease is gone already.
-- The hash expires with the lease (the filter PEXPIREs it on every renewal and
-- DELetes it on release).
if #KEYS ~= 2 or #ARGV ~= 5 then
  return redis.error_reply('ERR conn_inventory.lua: expected 2 KEYS and 5 ARGV, got ' .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local id, pod, ttl = ARGV[1], ARGV[2], ARGV[3]
if #ttl > 15 or not string.find(ttl, '^%d+$') or tonumber(ttl) < 1 then
  return redis.error_reply('ERR conn_inventory.lua: ARGV[3] lease TTL ms must be an integer >= 1, got \'' .. ttl .. '\'')
end
if not redis.call('ZSCORE', KEYS[2], id .. ' ' .. pod) then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'pod', pod, 'proxy', ARGV[4], 'client', ARGV[5],
  'start_ms', string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
