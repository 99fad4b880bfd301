-- Envoy's admin, from the agent: plain HTTP/1.1 on the pod's loopback (the admin listens on
-- 127.0.0.1 only), one request per connection, every wait bounded.
local socket = require("socket")

local M = {}

local TIMEOUT_S = 1
local MAX_BODY = 64 * 1024 * 1024 -- /clusters at 10,000 hosts is ~8 MB

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
  local status_line = c:receive("*l")
  local status = status_line and tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then
    c:close()
    return nil, "no HTTP answer from " .. admin .. path
  end
  local length
  repeat
    local line = c:receive("*l")
    if line then length = length or tonumber(line:lower():match("^content%-length:%s*(%d+)")) end
  until not line or line == ""
  local parts, got = {}, 0
  while socket.gettime() < deadline and got < MAX_BODY and (not length or got < length) do
    local chunk, rerr, partial = c:receive(length and math.min(length - got, 65536) or 65536)
    chunk = chunk or partial
    if chunk and #chunk > 0 then
      parts[#parts + 1] = chunk
      got = got + #chunk
    end
    if rerr then break end
  end
  c:close()
  return status, table.concat(parts)
end

return M
