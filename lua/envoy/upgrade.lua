-- What a request is, as Envoy's HTTP connection manager sees it: a WebSocket upgrade or
-- not, and the headers no client may send. Pure functions of the headers.
local M = {}

-- True when a comma-separated header value has `token` (lower-case) as one element,
-- blanks around it aside. Linear in the value and at C speed for any value: one lower(),
-- then a plain find() of the token, and at each place it is found a look at the blanks
-- around it, which are never looked at twice. (Splitting on "," and trimming each part is
-- quadratic on a long run of blanks.) No length cap: a value this filter refused to read,
-- Envoy would still upgrade.
local BLANK = { [9] = true, [32] = true }
local COMMA = 44
function M.has_token(value, token)
  if not value then return false end
  local v = value:lower()
  local n = #v
  local at = 1
  while true do
    local s, e = v:find(token, at, true)
    if not s then return false end
    local i = s - 1
    while i >= 1 and BLANK[v:byte(i)] do i = i - 1 end
    local j = e + 1
    while j <= n and BLANK[v:byte(j)] do j = j + 1 end
    if (i < 1 or v:byte(i) == COMMA) and (j > n or v:byte(j) == COMMA) then return true end
    at = s + 1
  end
end

-- "h1": HTTP/1.1 `Connection: upgrade` + `Upgrade: websocket` (tokens, any case); "h2": an
-- HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441) -- which Envoy's HTTP/2
-- codec normally rewrites into the HTTP/1.1 form before the filters, its 200 seen as 101
-- (docs/filter.md); the raw form is kept as a fallback. nil: not an upgrade
-- (`Upgrade: websocket` without the Connection token is not one for Envoy either).
function M.websocket_kind(hdrs)
  if M.has_token(hdrs:get("connection"), "upgrade") and M.has_token(hdrs:get("upgrade"), "websocket") then
    return "h1"
  end
  if hdrs:get(":method") == "CONNECT" and (hdrs:get(":protocol") or ""):lower() == "websocket" then
    return "h2"
  end
  return nil
end

-- Removes the headers no client may send: our own namespace, and the one header that can
-- pick an upstream host by itself (original destination clusters).
function M.strip_internal(hdrs)
  local drop
  for k, _ in pairs(hdrs) do
    local lk = k:lower()
    if lk:sub(1, 5) == "x-ws-" or lk == "x-envoy-original-dst-host" then
      drop = drop or {}
      drop[#drop + 1] = k
    end
  end
  -- Removal only after the iteration completed (the Lua filter forbids modifying
  -- headers during pairs(), see the header object's __pairs() in the Envoy docs).
  if drop then
    for _, k in ipairs(drop) do hdrs:remove(k) end
  end
end

return M
