-- This agent's place in the fleet: its beat (the slot stays alive, the state's epoch is
-- read), and the recovery after Redis lost its state. Redis decides nothing while a
-- recovery is under way: it waits until every proxy that the first agent back knew alive
-- has put its streams back (ws_recover), or RECOVERY_MAX_MS has passed.
local M = {}

local LIST_EVERY = 30 -- beats: the live proxies are asked for at least this often

local Fleet = {}
Fleet.__index = Fleet

function M.new(calls, proxy, random_hex)
  return setmetatable({
    calls = calls, proxy = proxy, random_hex = random_hex,
    epoch = nil, known = {}, beats = 0, live = nil, -- live: how many agents Redis last counted
  }, Fleet)
end

--- One beat. Returns { epoch = <Redis's, "" when none>, recovering_ms, slot_ok }, or nil + error.
function Fleet:beat(run, slot)
  self.beats = self.beats + 1
  -- The list of live proxies when the count of them changed (or now and then): the first
  -- agent back after a state loss makes Redis wait for each one it knew.
  local list = self.beats % LIST_EVERY == 1 or self.live_changed
  local r, err = run({ self.calls.beat(self.proxy, slot, list) })
  if not r then return nil, err end
  local epoch, recovering_ms, slot_ok, names = r[1][1], tonumber(r[1][2]) or 0, tonumber(r[1][3]) == 1, r[1][4]
  local live = tonumber(r[1][5])
  if list and type(names) == "table" then
    self.known = {}
    for _, p in ipairs(names) do
      if p ~= self.proxy then self.known[#self.known + 1] = p end
    end
    self.live, self.live_changed = live, false
  elseif live ~= self.live then
    self.live_changed = true
  end
  return { epoch = epoch, recovering_ms = recovering_ms, slot_ok = slot_ok }
end

--- What a beat means: "recover" (Redis has no epoch, or another one than this agent's: it
-- lost its state; or a recovery is under way that this agent, just started, must join),
-- "adopt" (the first epoch this agent sees), or nil (nothing changed).
function Fleet:change(b)
  local epoch = b.epoch
  if epoch == "" then return "recover" end
  if self.epoch == nil then return b.recovering_ms > 0 and "recover" or "adopt" end
  if epoch ~= self.epoch then return "recover" end
  return nil
end

--- Starts (or joins) a recovery: Redis waits for this proxy and every one it knew alive.
function Fleet:begin(run)
  local r, err = run({ self.calls.recover("begin", self.proxy, self.random_hex(8), self.known) })
  if not r then return nil, err end
  return r[1][1]
end

--- This proxy has put its streams and hosts back. Returns the proxies still awaited.
function Fleet:done(run)
  local r, err = run({ self.calls.recover("done", self.proxy) })
  if not r then return nil, err end
  return tonumber(r[1])
end

return M
