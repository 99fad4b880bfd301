-- The answers the public filter gives itself (docs/filter.md, "Responses the filter sends
-- itself"): 429 for the rate limit, 503 for capacity, no backend, a state being rebuilt
-- after a Redis restart, or no admission control.
local M = {}

--- Retry-After of a 503 "capacity", at most (ms): slots come back sooner than the first
-- lease expiry as connections close (the lease log's end entries).
M.FULL_RETRY_MAX_MS = 5000

local function seconds(ms) return tostring(math.max(1, math.ceil(ms / 1000))) end

function M.rate_limited(h, rate_limit, retry_ms)
  local s = seconds(retry_ms)
  h:respond({
    [":status"] = "429", ["retry-after"] = s, ["ratelimit-limit"] = tostring(rate_limit),
    ["ratelimit-remaining"] = "0", ["ratelimit-reset"] = s,
    ["content-type"] = "text/plain", ["x-ws-admission"] = "rate_limited",
  }, "too many WebSocket upgrades, retry later\n")
end

--- This client is at its own limit (its open sockets, or its upgrades per window).
function M.client_limited(h, retry_ms)
  h:respond({
    [":status"] = "429", ["retry-after"] = seconds(retry_ms),
    ["content-type"] = "text/plain", ["x-ws-admission"] = "client",
  }, "too many WebSockets from this client, retry later\n")
end

function M.unavailable(h, reason, retry_ms, body)
  h:respond({
    [":status"] = "503", ["retry-after"] = seconds(retry_ms),
    ["content-type"] = "text/plain", ["x-ws-admission"] = reason,
  }, body)
end

function M.full(h, retry_ms)
  M.unavailable(h, "capacity", retry_ms, "all backends are at their connection limit, retry later\n")
end

function M.no_backend(h)
  M.unavailable(h, "no_backend", 1000, "no backend available\n")
end

function M.recovering(h, retry_ms)
  M.unavailable(h, "recovering", retry_ms, "admission state is being rebuilt after a Redis restart, retry shortly\n")
end

function M.redis_unavailable(h)
  M.unavailable(h, "redis_unavailable", 1000, "admission control unavailable, retry later\n")
end

return M
