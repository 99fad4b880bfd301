-- The Redis side of admission as the filter speaks it (lua/redis/README.md): the script
-- calls, built from the key schema, and admit.lua's reply turned into a decision. Pure:
-- no Envoy API, no socket, so it is tested on its own.
--
-- An entry is what resp.lua's client:run() takes: { script = name, keys = {...}, args =
-- {...} }, or a plain command { "DEL", key }.
local keys = require("keys")

local M = {}

--- The calls for one deployment (settings S: hash_tag and the limits).
function M.new(S)
  local K = keys.new(S.hash_tag)
  local A = { K = K }
  local lease_keys = { K.leases, K.load, K.stats }

  function A.admit(id, view, epoch)
    return {
      script = "admit", keys = { K.rate, K.stats, K.leases, K.load, K.views, K.hosts },
      args = { S.rate_limit, S.rate_window_ms, S.max_connections_per_pod, S.lease_ttl_ms, id, view, epoch },
    }
  end

  function A.register_view(view, pods)
    local args = { view }
    for i = 1, #pods do args[1 + i] = pods[i] end
    return { script = "register_view", keys = { K.views, K.hosts, K.load }, args = args }
  end

  function A.renew(id, pod) return { script = "renew", keys = { K.leases }, args = { id, pod, S.lease_ttl_ms } } end
  function A.release(id, pod) return { script = "release", keys = lease_keys, args = { id, pod } } end
  function A.reregister(id, pod) return { script = "reregister", keys = lease_keys, args = { id, pod, S.lease_ttl_ms } } end

  --- One scan step of release_proxy.lua: every lease of `proxy`, or only those of `ids`.
  function A.release_proxy(proxy, cursor, ids)
    local args = { proxy, cursor }
    for i = 1, #(ids or {}) do args[2 + i] = ids[i] end
    return { script = "release_proxy", keys = lease_keys, args = args }
  end

  function A.inventory(id, pod, proxy, client)
    return { script = "conn_inventory", keys = { K.conn .. id, K.leases }, args = { id, pod, S.lease_ttl_ms, proxy, client } }
  end
  function A.inventory_renew(id) return { "PEXPIRE", K.conn .. id, S.lease_ttl_ms } end
  function A.inventory_delete(id) return { "DEL", K.conn .. id } end

  function A.request_rate(id)
    return { script = "request_rate", keys = { K.rate_requests, K.stats }, args = { S.rate_limit, S.rate_window_ms, id } }
  end

  function A.snapshot() return { script = "snapshot", keys = { K.rate, K.stats, K.leases, K.load }, args = { S.rate_window_ms } } end

  return A
end

--- admit.lua's reply as a decision: { status = "ADMITTED", pod = <id> } |
-- { status = "RATE_LIMITED", retry_ms } | { status = "FULL", retry_ms } (retry_ms the
-- Retry-After: admit's first expiry, at most max_full_retry_ms, 1000 when it gave none) |
-- { status = "HOSTS" } | { status = "EPOCH" } | nil (not a reply admit.lua gives).
function M.decide(reply, max_full_retry_ms)
  local status = type(reply) == "table" and reply[1]
  if status == "ADMITTED" and type(reply[2]) == "string" then return { status = status, pod = reply[2] } end
  if status == "RATE_LIMITED" then return { status = status, retry_ms = tonumber(reply[4]) or 1000 } end
  if status == "FULL" then
    local retry_ms = math.min(tonumber(reply[4]) or 0, max_full_retry_ms)
    if retry_ms <= 0 then retry_ms = 1000 end
    return { status = status, retry_ms = retry_ms }
  end
  if status == "HOSTS" or status == "EPOCH" then return { status = status } end
  return nil
end

return M
