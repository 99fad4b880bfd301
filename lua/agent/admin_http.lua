-- Envoy's admin, from the agent: plain HTTP/1.1 on the pod's loopback (the admin listens on
-- 127.0.0.1 only), one request per connection, every wait bounded.
local socket = require("socket")

local M = {}

local TIMEOUT_S = 1
local MAX_BODY = 64 * 1024 * 1024 -- /clusters at 10,000 hosts is ~8 MB

-- The status line and the headers: status (nil: no HTTP answer), Content-Length, chunked.
local function read_head(c)
  local status_line = c:receive("*l")
  local status = status_line and tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil end
  local length, chunked
  repeat
    local line = c:receive("*l")
    if line then
      local lower = line:lower()
      length = length or tonumber(lower:match("^content%-length:%s*(%d+)"))
      chunked = chunked or lower:match("^transfer%-encoding:.*chunked") ~= nil
    end
  until not line or line == ""
  return status, length, chunked
end

-- `n` bytes into body.parts (or, with n nil, up to the close), within the deadline and
-- MAX_BODY; true when all `n` came.
local function read_bytes(c, body, n, deadline)
  while socket.gettime() < deadline and body.size < MAX_BODY and (not n or n > 0) do
    local chunk, rerr, partial = c:receive(n and math.min(n, 65536) or 65536)
    chunk = chunk or partial
    if chunk and #chunk > 0 then
      body.parts[#body.parts + 1] = chunk
      body.size = body.size + #chunk
      if n then n = n - #chunk end
    end
    if rerr then return false end
  end
  return not n or n == 0
end

-- Envoy's admin streams large pages (/clusters) without a length: <hex size> CRLF <bytes>
-- CRLF ... 0 CRLF CRLF. The size lines are not body (a boundary can fall inside a line of
-- the page). False when the answer broke off.
local function read_chunks(c, body, deadline)
  while true do
    local size_line = c:receive("*l")
    local hex = size_line and size_line:match("^(%x+)")
    local size = hex and tonumber(hex, 16)
    if not size then return false end
    if size == 0 then return true end
    if not read_bytes(c, body, size, deadline) or c:receive("*l") ~= "" then return false end
  end
end

-- The body: chunked, or Content-Length bytes, or up to the close. nil when a chunked
-- answer broke off.
local function read_body(c, length, chunked, deadline)
  local body = { parts = {}, size = 0 }
  if chunked then
    if not read_chunks(c, body, deadline) then return nil end
  else
    read_bytes(c, body, length, deadline)
  end
  return table.concat(body.parts)
end

--- admin: "host:port". Returns status (number), body; or nil, error.
function M.request(admin, method, path)
  local host, port = (admin or ""):match("^([%w%.%-]+):(%d+)$")
  if not host then return nil, "WS_ENVOY_ADMIN is not set to host:port (got " .. tostring(admin) .. ")" end
  local c = socket.tcp()
  c:settimeout(TIMEOUT_S)
  local ok, err = c:connect(host, tonumber(port))
  if not ok then
    c:close()
    return nil, "connect " .. admin .. ": " .. tostring(err)
  end
  c:send(method .. " " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
  local deadline = socket.gettime() + 5 * TIMEOUT_S
  local status, length, chunked = read_head(c)
  if not status then
    c:close()
    return nil, "no HTTP answer from " .. admin .. path
  end
  local body = read_body(c, length, chunked, deadline)
  c:close()
  if not body then return nil, "a chunked answer from " .. admin .. path .. " broke off" end
  return status, body
end

return M
