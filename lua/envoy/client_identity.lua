-- Who a client is, for the per-client limits: pure functions of what Envoy hands the filter,
-- never of anything a client may choose when the source is its address.
--
--   address   the downstream address as Envoy sees it: the peer, or the client named by a
--             proxy protocol header (the NLB's), or by X-Forwarded-For at the configured
--             number of trusted hops (Envoy's xff_num_trusted_hops decides it, not a
--             header the filter reads); IPv6 grouped by a prefix (a /64 is one household)
--   header    a request header set by a trusted layer in front (an authenticated user id);
--             absent or unusable: the address
--
-- The identity leaves as a key of 16 hex digits (two 32-bit FNV-1a hashes): bounded,
-- never client bytes in a key name or a lease member, the same for every proxy.
local bit = require("bit")

local M = {}

local MAX_HEADER = 256 -- longer values are not an identity (the address is used)

-- FNV-1a, 32 bits, from `basis`. The product by the prime 16777619 = 2^24 + 403 is formed
-- as a shift plus a product small enough for a double, so every step is exact.
local function fnv1a(s, basis)
  local h = basis
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(bit.lshift(h, 24) + (h % 0x100000000) * 403 % 0x100000000)
  end
  return h % 0x100000000
end

--- 16 hex digits for an identity string.
function M.key(identity)
  return string.format("%08x%08x", fnv1a(identity, 2166136261), fnv1a(identity, 0x6d2b79f5))
end

-- The groups of an IPv6 address (8 numbers), or nil.
local function ipv6_groups(a)
  if a:find("[^%x:%.]") or #a > 45 then return nil end
  local v4 = a:match(":(%d+%.%d+%.%d+%.%d+)$")
  if v4 then
    local o = {}
    for n in v4:gmatch("%d+") do o[#o + 1] = tonumber(n) end
    if #o ~= 4 then return nil end
    a = a:sub(1, #a - #v4) .. string.format("%x:%x", o[1] * 256 + o[2], o[3] * 256 + o[4])
  end
  local head, tail = a:match("^(.-)::(.*)$")
  local function split(s)
    local out = {}
    if s == "" then return out end
    for g in (s .. ":"):gmatch("([^:]*):") do
      if g == "" or #g > 4 then return nil end
      out[#out + 1] = tonumber(g, 16)
    end
    return out
  end
  local groups
  if head then
    local h, t = split(head), split(tail)
    if not h or not t or #h + #t > 7 then return nil end
    groups = h
    for _ = 1, 8 - #h - #t do groups[#groups + 1] = 0 end
    for _, g in ipairs(t) do groups[#groups + 1] = g end
  else
    groups = split(a)
    if not groups or #groups ~= 8 then return nil end
  end
  return groups
end

--- The identity of an address Envoy gives as "ip:port" or "[ipv6]:port" (or without a port):
-- IPv4 as is, IPv6 cut to its first `prefix_bits` bits (an IPv4-mapped IPv6 address as the
-- IPv4 address), or nil when it is not an address.
function M.of_address(addr, prefix_bits)
  if type(addr) ~= "string" or #addr > 64 then return nil end
  local v6 = addr:match("^%[([^%]]+)%]") or (addr:find(":.*:") and addr)
  if not v6 then
    local v4 = addr:match("^(%d+%.%d+%.%d+%.%d+)")
    return v4 and ("4:" .. v4) or nil
  end
  local g = ipv6_groups(v6)
  if not g then return nil end
  if g[1] == 0 and g[2] == 0 and g[3] == 0 and g[4] == 0 and g[5] == 0 and g[6] == 0xffff then
    return string.format("4:%d.%d.%d.%d", math.floor(g[7] / 256), g[7] % 256, math.floor(g[8] / 256), g[8] % 256)
  end
  local out, bits = {}, prefix_bits
  for i = 1, 8 do
    local keep = math.max(0, math.min(16, bits))
    bits = bits - 16
    out[i] = string.format("%x", keep == 0 and 0 or math.floor(g[i] / 2 ^ (16 - keep)) * 2 ^ (16 - keep))
  end
  return "6:" .. table.concat(out, ":") .. "/" .. prefix_bits
end

--- The client key of a request, or nil (no usable identity: the client limits do not apply).
-- S: settings (client_identity, client_header, client_ipv6_prefix_bits); header: the value
-- of S.client_header (or nil); address: streamInfo():downstreamRemoteAddress().
function M.of_request(S, header, address)
  if S.client_identity == "header" and type(header) == "string" and header ~= "" and #header <= MAX_HEADER then
    return M.key("h:" .. header)
  end
  local id = M.of_address(address, S.client_ipv6_prefix_bits)
  return id and M.key(id) or nil
end

return M
