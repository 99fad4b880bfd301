-- register_view.lua: put a proxy's healthy host list into Redis once, under its view
-- id, so that admit.lua is given the id instead of the list. Called by the filter when
-- admit.lua answered HOSTS (a new list, or a view that lapsed or was lost with Redis's
-- state). Contract: lua/redis/README.md.
--
-- KEYS[1] views  KEYS[2] hosts  KEYS[3] load
-- ARGV[1] view id (16 hex digits), ARGV[2..1+n] pod ids (n >= 0, no spaces)
-- Writes `hosts` members "<view> <pod>", adds each pod to `load` with count 0 unless it
-- is there already (with its count), and marks the view used now. Views unused for
-- VIEW_TTL_MS (as admit.lua) are deleted on the way, with their hosts members.
-- Reply: the number of pods in the view.
-- Cost: O(n log n) for this view, plus O(size) of each dead view it deletes; it runs
-- once per host list change per proxy worker, never per upgrade.
local call = redis.call
if #KEYS ~= 3 or #ARGV < 1 then
  return redis.error_reply('ERR register_view.lua: expected 3 KEYS and 1+n ARGV for n pods, got '
    .. #KEYS .. ' KEYS and ' .. #ARGV .. ' ARGV')
end
local kViews, kHosts, kLoad = KEYS[1], KEYS[2], KEYS[3]
local view = ARGV[1]
if not string.find(view, '^%x+$') or #view ~= 16 then
  return redis.error_reply('ERR register_view.lua: ARGV[1] host view id must be 16 hex digits, got \'' .. view .. '\'')
end
for i = 2, #ARGV do
  local pod = ARGV[i]
  if pod == '' or #pod > 64 or string.find(pod, ' ', 1, true) then
    return redis.error_reply('ERR register_view.lua: ARGV[' .. i .. '] pod id must be 1-64 characters without spaces, got \''
      .. string.sub(pod, 1, 80) .. '\'')
  end
end
local VIEW_TTL_MS = 600000
local t = call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)

-- Dead views first (never this one: it is marked used below).
local dead = call('ZRANGEBYSCORE', kViews, '-inf', string.format('%d', now - VIEW_TTL_MS))
for _, v in ipairs(dead) do
  if v ~= view then
    -- Its members are "<v> <pod>"; '!' is the byte after ' ', so this is the prefix range.
    call('ZREMRANGEBYLEX', kHosts, '[' .. v .. ' ', '(' .. v .. '!')
    call('ZREM', kViews, v)
  end
end

local BATCH = 500 -- members per ZADD (unpack() of a large table would overflow the C stack)
local prefix = view .. ' '
local i = 2
while i <= #ARGV do
  local hostArgs, loadArgs = { 'ZADD', kHosts }, { 'ZADD', kLoad, 'NX' }
  for j = i, math.min(#ARGV, i + BATCH - 1) do
    hostArgs[#hostArgs + 1] = '0'
    hostArgs[#hostArgs + 1] = prefix .. ARGV[j]
    loadArgs[#loadArgs + 1] = '0'
    loadArgs[#loadArgs + 1] = ARGV[j]
  end
  call(unpack(hostArgs))
  call(unpack(loadArgs))
  i = i + BATCH
end
call('ZADD', kViews, string.format('%d', now), view)
return #ARGV - 1
