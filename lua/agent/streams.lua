-- The proxy's open WebSocket streams as its lease log tells them (lease_log.lua), and the
-- lease operations that follow from each entry, queued for Redis (ws_leases) in the order
-- Envoy wrote them:
--   the 101 of an admitted stream     nothing (ws_admit took the lease just before)
--   the 101 of a fail-open stream     R: its lease is registered on the host Envoy chose
--   a periodic entry                  R: renewed, or put back if Redis lost it
--   the end                           X: released; F when the upgrade never reached a
--                                     backend (its window entry back, its pod penalised)
-- The table is the truth after a Redis state loss: every stream in it is put back, and no
-- other (ended streams left it at their end entry).
local M = {}

local BATCH = 500          -- operations per ws_leases call (the library takes 1000 at most)
local MAX_PENDING = 20000  -- queued while Redis is unavailable; the oldest are dropped
-- Envoy's response flags of an upgrade that never reached a backend: connection failure,
-- no healthy upstream (the pinned host is gone), retries exhausted on those.
local NO_BACKEND_FLAGS = { UF = true, UH = true, URX = true }

local Streams = {}
Streams.__index = Streams

--- S: settings (renew_interval_ms); now_ms: the wall clock (the lease log's times are Envoy's wall clock).
function M.new(S, now_ms)
  return setmetatable({
    S = S, now_ms = now_ms,
    open = {}, count = 0,                -- id -> { pod, at = last entry (ms) }
    queue = {}, head = 1, tail = 0,      -- queue[head .. tail] = { op, id, pod }
    queued_renewal = {},                 -- id -> true while an R for it waits
    ended = {},                          -- catching up: id -> { op, pod }
    draining = false, dropped = 0,
  }, Streams)
end

-- The pod of a stream's lease: the one the filter pinned, else (routed without a decision
-- while Redis was unavailable) the host Envoy chose.
local function lease_pod(rec) return rec.pod or rec.upstream end

local function never_reached_backend(rec)
  if rec.status == 101 then return false end
  for f in rec.flags:gmatch("[^,]+") do
    if NO_BACKEND_FLAGS[f] then return true end
  end
  return false
end

function Streams:push(op, id, pod)
  if op == "R" then
    -- A draining proxy gives its slots back (drain.lua) and must not take them again.
    if self.draining or self.queued_renewal[id] then return end
    self.queued_renewal[id] = true
  end
  self.tail = self.tail + 1
  self.queue[self.tail] = { op, id, pod }
  if self.tail - self.head + 1 > MAX_PENDING then
    local oldest = self.queue[self.head]
    if oldest[1] == "R" then self.queued_renewal[oldest[2]] = nil end
    self.queue[self.head] = nil
    self.head = self.head + 1
    self.dropped = self.dropped + 1
  end
end

function Streams:pending() return self.tail - self.head + 1 end

--- One entry of the lease log. `catching_up`: read from what Envoy wrote before this agent
-- started; the operations are queued once at the end of it (finish_catch_up), not per line.
function Streams:apply(rec, catching_up)
  local pod = lease_pod(rec)
  if not pod then return end
  if rec.kind == "end" then
    if self.open[rec.id] then
      self.open[rec.id] = nil
      self.count = self.count - 1
    end
    local op = (rec.registered and never_reached_backend(rec)) and "F" or "X"
    if catching_up then self.ended[rec.id] = { op, pod } else self:push(op, rec.id, pod) end
    return
  end
  if not self.open[rec.id] then self.count = self.count + 1 end
  self.open[rec.id] = { pod = pod, at = rec.at }
  if not catching_up and (rec.kind == "periodic" or not rec.registered) then self:push("R", rec.id, pod) end
end

-- A stream without an entry for this long is gone (its end entry lost with a truncated file).
function Streams:stale_before()
  return self.now_ms() - 2 * self.S.renew_interval_ms - 5000
end

--- After the first read to the end of the file: releases for the streams that ended while
-- no agent ran, renewals for those still open.
function Streams:finish_catch_up()
  for id, e in pairs(self.ended) do self:push(e[1], id, e[2]) end
  self.ended = {}
  self:sweep()
  for id, s in pairs(self.open) do self:push("R", id, s.pod) end
end

--- Every open stream again (Redis lost its state): a renewal each.
function Streams:reregister_all()
  self:sweep()
  for id, s in pairs(self.open) do self:push("R", id, s.pod) end
end

--- Drops streams whose entries stopped (see stale_before).
function Streams:sweep()
  local before = self:stale_before()
  for id, s in pairs(self.open) do
    if s.at < before then
      self.open[id] = nil
      self.count = self.count - 1
    end
  end
end

--- Sends the queue in batches (calls: admission.new(S); run(entries) -> replies or nil, err).
-- Returns the replies' totals {renewed, readded, released, failed}, or nil + error (what is
-- left stays queued).
function Streams:flush(calls, run)
  local totals = { 0, 0, 0, 0 }
  while self.head <= self.tail do
    local ops = {}
    for i = self.head, math.min(self.head + BATCH - 1, self.tail) do ops[#ops + 1] = self.queue[i] end
    local replies, err = run({ calls.leases(ops) })
    if not replies then return nil, err end
    for i = 1, 4 do totals[i] = totals[i] + (tonumber(replies[1][i]) or 0) end
    for i = self.head, self.head + #ops - 1 do
      local op = self.queue[i]
      if op[1] == "R" then self.queued_renewal[op[2]] = nil end
      self.queue[i] = nil
    end
    self.head = self.head + #ops
  end
  return totals
end

return M
