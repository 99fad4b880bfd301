-- The Redis side of admission as the proxies speak it (lua/redis/README.md): every call of
-- the ws_admission library, built from the key schema, and ws_admit's reply turned into a
-- decision. Pure: no Envoy API, no socket, so it is tested on its own.
--
-- An entry is what resp.lua's client:run() takes: { fn = name, keys = {...}, args = {...} }.
local keys = require("keys")

local M = {}

-- Each call is a function of the deployment's settings (S) and key names (K), then its own
-- arguments; M.new binds the first two.

-- The keys of the client limits, last in ws_admit's and ws_leases' KEYS.
local function client_keys(K) return K.clients, K.crate, K.crate_t end

--- One decision (the client limits apply to an id with a client key); `address` (the
-- inventory's client address) only with connection_inventory.
local function admit(S, K, id, address)
  local args = {
    S.rate_limit, S.rate_window_ms, S.max_connections_per_pod, S.lease_ttl_ms, id,
    S.max_connections_per_client, S.max_connections_per_client_percent, S.rate_limit_per_client,
  }
  if address then args[9] = address end
  return {
    fn = "ws_admit",
    keys = { K.rate, K.stats, K.leases, K.load, K.reach, K.down, K.agents, K.inventory, client_keys(K) },
    args = args,
  }
end

--- Lease operations in the order they happened: { {op, id, pod}, ... }, op R (renew, or put
-- back), X (release) or F (an upgrade that never reached a backend).
local function leases(S, K, ops)
  local args = { S.lease_ttl_ms, S.penalty_ms }
  for i = 1, #ops do
    args[#args + 1], args[#args + 2], args[#args + 3] = ops[i][1], ops[i][2], ops[i][3]
  end
  return {
    fn = "ws_leases",
    keys = { K.rate, K.leases, K.load, K.stats, K.reach, K.down, K.inventory, client_keys(K) },
    args = args,
  }
end

--- A proxy's healthy hosts: mode claim (proxy), add/remove (proxy, slot, pods), commit (proxy, slot).
local function hosts(_, K, mode, proxy, slot, pods)
  local args = { mode, proxy }
  if slot then args[3] = slot end
  for i = 1, #(pods or {}) do args[#args + 1] = pods[i] end
  return { fn = "ws_hosts", keys = { K.agents, K.beats, K.reach, K.load, K.down }, args = args }
end

local function beat(_, K, proxy, slot, list)
  return {
    fn = "ws_beat",
    keys = { K.stats, K.agents, K.beats, K.reach, K.load, K.down, K.recovery },
    args = { proxy, slot or "", list and 1 or 0 },
  }
end

--- After a state loss: begin (with a new epoch and the proxies known alive), done.
local function recover(_, K, mode, proxy, epoch, known)
  local args = { mode, proxy }
  if mode == "begin" then
    args[3] = epoch
    for i = 1, #(known or {}) do args[#args + 1] = known[i] end
  end
  return { fn = "ws_recover", keys = { K.stats, K.recovery }, args = args }
end

--- One scan step of every lease of `proxy`.
local function release_proxy(_, K, proxy, cursor)
  return {
    fn = "ws_release_proxy",
    keys = { K.leases, K.load, K.stats, K.reach, K.down, K.inventory, K.clients },
    args = { proxy, cursor },
  }
end

local function snapshot(S, K)
  return {
    fn = "ws_snapshot",
    keys = { K.rate, K.stats, K.leases, K.load, K.reach, K.down, K.agents, K.beats, K.inventory, K.clients },
    args = { S.rate_window_ms },
  }
end

local function request_rate(S, K, id)
  return { fn = "ws_request_rate", keys = { K.rate_requests, K.stats }, args = { S.rate_limit, S.rate_window_ms, id } }
end

local CALLS = {
  admit = admit, leases = leases, hosts = hosts, beat = beat, recover = recover,
  release_proxy = release_proxy, snapshot = snapshot, request_rate = request_rate,
}

--- The calls for one deployment (settings S: hash_tag and the limits), and its key names
-- as K.
function M.new(S)
  local K = keys.new(S.hash_tag)
  local A = { K = K }
  for name, call in pairs(CALLS) do
    A[name] = function(...) return call(S, K, ...) end
  end
  return A
end

--- ws_admit's reply as a decision: { status = "ADMITTED", pod = <id> } |
-- { status = "RATE_LIMITED" | "CLIENT" | "FULL" | "RECOVERING", retry_ms } (FULL: the first lease
-- expiry, at most max_full_retry_ms, 1000 when it gave none) | { status = "NOHOSTS" } |
-- nil (not a reply ws_admit gives).
function M.decide(reply, max_full_retry_ms)
  local status = type(reply) == "table" and reply[1]
  if status == "ADMITTED" and type(reply[2]) == "string" then return { status = status, pod = reply[2] } end
  if status == "RATE_LIMITED" or status == "RECOVERING" or status == "CLIENT" then
    return { status = status, retry_ms = math.max(1, tonumber(reply[4]) or 1000) }
  end
  if status == "FULL" then
    local retry_ms = math.min(tonumber(reply[4]) or 0, max_full_retry_ms)
    if retry_ms <= 0 then retry_ms = 1000 end
    return { status = status, retry_ms = retry_ms }
  end
  if status == "NOHOSTS" then return { status = status } end
  return nil
end

return M
