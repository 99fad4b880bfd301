-- A worker's link to Redis: its one connection (resp.lua), the back-off after a failure,
-- and the counting and logging of failures. Every Redis call of the public filter goes
-- through run(), so a Redis that is down costs each worker one bounded stall per
-- BACKOFF_MS, never one per request.
local resp = require("resp")
local settings_loader = require("settings_loader")

local M = {}

-- After a Redis failure, skip Redis this long (each request fails per failure_mode).
M.BACKOFF_MS = 500

local Link = {}
Link.__index = Link

--- S: checked settings; stats: the worker's counters (worker_stats); log: log(h, kind,
-- level, message), at most one line of a kind per second; now_ms: the clock.
function M.new(S, stats, log, now_ms)
  return setmetatable({
    client = resp.new(settings_loader.redis_options(S)),
    stats = stats, log = log, now_ms = now_ms,
    down_until = 0,
  }, Link)
end

--- True while the link is backing off after a failure.
function Link:backing_off()
  return self.now_ms() < self.down_until
end

function Link:failed(h, what, err)
  self.stats:inc("redis_errors_total", 1, true)
  self.down_until = self.now_ms() + M.BACKOFF_MS
  self.log(h, "redis", "warn", "ws-admission: redis " .. what .. " failed: " .. tostring(err))
end

--- Runs entries in one round trip. Returns the replies, or nil after counting and logging
-- a failure (an error reply of a function counts too); the second value is true when the
-- request may have run in Redis and its answer was lost (a read timeout).
function Link:run(h, what, entries)
  if self:backing_off() then return nil end
  local replies, err = self.client:run(entries)
  if not replies then
    self:failed(h, what, err)
    return nil, true
  end
  for i = 1, #replies do
    if resp.is_error(replies[i]) then
      self:failed(h, what, replies[i].err)
      return nil
    end
  end
  return replies
end

return M
