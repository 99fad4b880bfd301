-- A small RESP2 client over luasocket, one per Envoy worker (one per Lua state).
--
-- Why our own: the filter needs exactly one persistent connection per worker with
-- millisecond timeouts, AUTH from a file, FCALL of the ws_admission library and
-- pipelining; no Redis library is in the Envoy image and RESP2 is small.
--
-- Blocking: luasocket calls block the Envoy worker thread while they wait. The
-- caller keeps that bounded with tight timeouts (settings.redis_*_timeout_ms), one
-- round trip per decision and a back-off after a failure (redis_link.lua).
--
-- Errors: a transport problem (connect, write, read, timeout, protocol) closes the
-- socket and returns nil, message; the next call reconnects. A Redis error reply is
-- not a transport problem: it comes back as a value for which resp.is_error() is true.
local socket = require("socket")

local M = {}

-- After a failed connect, the Redis name is resolved again at most this often.
local RESOLVE_RETRY_S = 5

local ErrorReply = {}
ErrorReply.__index = ErrorReply
ErrorReply.__tostring = function(e) return e.err end

--- True when a reply is a Redis error reply ("-ERR ...", "-NOPERM ...").
function M.is_error(v)
  return getmetatable(v) == ErrorReply
end

local function error_reply(msg)
  return setmetatable({ err = msg }, ErrorReply)
end

local Client = {}
Client.__index = Client

local function arg_string(a)
  local t = type(a)
  if t == "string" then return a end
  if t == "number" then
    if a == math.floor(a) and a >= -2^53 and a <= 2^53 then
      return string.format("%d", a)
    end
    return string.format("%.17g", a)
  end
  if t == "boolean" then return a and "1" or "0" end
  error("resp: cannot send a " .. t .. " argument")
end

--- Encodes one command (an array of arguments) as a RESP2 array of bulk strings.
function M.encode(cmd)
  local parts = { "*" .. #cmd .. "\r\n" }
  for i = 1, #cmd do
    local s = arg_string(cmd[i])
    parts[#parts + 1] = "$" .. #s .. "\r\n" .. s .. "\r\n"
  end
  return table.concat(parts)
end

--- Creates a client. Nothing is connected until the first call.
-- opts: host, port, password_file ("" = no AUTH), username (ACL user; "" = AUTH with the
--       password alone, the `default` user), tls (boolean), ca_file (TLS trust;
--       default WS_REDIS_CA_FILE, else the system bundle),
--       connect_timeout_ms, read_timeout_ms
function M.new(opts)
  return setmetatable({
    host = opts.host,
    port = opts.port,
    password_file = opts.password_file or "",
    username = opts.username or "",
    tls = opts.tls or false,
    ca_file = opts.ca_file or os.getenv("WS_REDIS_CA_FILE") or "/etc/ssl/certs/ca-certificates.crt",
    connect_timeout = (opts.connect_timeout_ms or 100) / 1000,
    read_timeout = (opts.read_timeout_ms or 100) / 1000,
    sock = nil,
    connects = 0,   -- successful connects (a reconnect after an error counts again)
    resolves = 0,   -- name resolutions (see _address)
    addr = nil, addr_at = nil, addr_failed = false, resolve_err = nil,
  }, Client)
end

function Client:close()
  if self.sock then
    pcall(self.sock.close, self.sock)
    self.sock = nil
  end
end

local function read_password(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot read redis_password_file " .. path .. ": " .. tostring(err) end
  local s = f:read("*a") or ""
  f:close()
  -- A Secret mounted from a file often ends with a newline; it is not part of the password.
  s = s:gsub("[\r\n]+$", "")
  return s
end

-- One receive that ends by `deadline` (socket.gettime() seconds): luasocket's timeout
-- bounds each wait, not a whole reply, so a server that dribbles a reply out piece by
-- piece could otherwise hold the worker for a read timeout per piece.
local gettime = socket.gettime
local function recv(sock, pattern, deadline)
  local left = deadline - gettime()
  if left <= 0 then return nil, "timeout" end
  sock:settimeout(left)
  return sock:receive(pattern)
end

-- Reads one reply. Returns value, or nil + transport error.
local function read_reply(sock, deadline)
  local line, err, partial = recv(sock, "*l", deadline)
  if not line then return nil, err, partial end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then
    return rest
  elseif kind == "-" then
    return error_reply(rest)
  elseif kind == ":" then
    local n = tonumber(rest)
    if not n then return nil, "protocol error: bad integer " .. rest end
    return n
  elseif kind == "$" then
    local n = tonumber(rest)
    if not n then return nil, "protocol error: bad bulk length " .. rest end
    if n < 0 then return false end -- nil bulk string
    local data, rerr = recv(sock, n + 2, deadline)
    if not data then return nil, rerr end
    return data:sub(1, n)
  elseif kind == "*" then
    local n = tonumber(rest)
    if not n then return nil, "protocol error: bad array length " .. rest end
    if n < 0 then return false end
    local arr = {}
    for i = 1, n do
      local v, verr = read_reply(sock, deadline)
      if v == nil then return nil, verr end
      arr[i] = v
    end
    return arr
  end
  return nil, "protocol error: unexpected reply type " .. kind
end

-- RFC 6125-style check of the server certificate against the name we connected to:
-- subjectAltName dNSName (exact, or a "*." wildcard for one left-most label) or
-- iPAddress; luasec verifies the chain only, not the name.
local function cert_matches(cert, host)
  local ok, ext = pcall(cert.extensions, cert)
  local san = ok and ext and ext["2.5.29.17"]
  if not san then return false end
  host = host:lower():gsub("%.$", "") -- a fully qualified "name." is the same name
  for _, ip in ipairs(san.iPAddress or {}) do
    if ip == host then return true end
  end
  for _, dns in ipairs(san.dNSName or {}) do
    dns = dns:lower()
    if dns == host then return true end
    if dns:sub(1, 2) == "*." then
      local rest = host:match("^[^.]+(%..+)$")
      if rest and rest == dns:sub(2) then return true end
    end
  end
  return false
end
M.cert_matches = cert_matches

local function is_ip_literal(h)
  return h:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or h:find(":", 1, true) ~= nil
end

-- The address to connect to. Name resolution (getaddrinfo) blocks the worker and no
-- socket timeout bounds it -- in Kubernetes a `*.svc.cluster.local` name is first tried
-- with every search domain (ndots:5) -- so a name is resolved once per worker and the
-- address reused for every reconnect; only after a failed connect is it resolved
-- again, at most every RESOLVE_RETRY_S (a Service IP is stable; a replaced pod IP is
-- picked up then). If resolving fails, the last good address is kept.
function Client:_address()
  if is_ip_literal(self.host) then return self.host end
  local now = socket.gettime()
  if self.addr and not (self.addr_failed and now - self.addr_at >= RESOLVE_RETRY_S) then
    return self.addr
  end
  if not self.addr and self.addr_at and now - self.addr_at < RESOLVE_RETRY_S / 5 then
    return nil, "resolve " .. self.host .. ": " .. tostring(self.resolve_err) .. " (retrying shortly)"
  end
  self.addr_at = now
  self.resolves = self.resolves + 1
  -- getaddrinfo, not toip (IPv4 only): an IPv6-only cluster resolves too; the first
  -- answer is the resolver's preferred one.
  local list, err = socket.dns.getaddrinfo(self.host)
  local ip = type(list) == "table" and list[1] and list[1].addr
  if ip then
    self.addr, self.addr_failed = ip, false
    return ip
  end
  self.resolve_err = err
  if self.addr then return self.addr end
  return nil, "resolve " .. self.host .. ": " .. tostring(err)
end

-- luasec: chain verified against the CA bundle (the system's, or WS_REDIS_CA_FILE),
-- SNI = redis_host, then the name checked against the certificate's subjectAltName.
-- Returns the TLS socket, or nil and the error (the socket closed).
function Client:_tls(sock)
  local ssl = require("ssl")
  local wrapped, werr = ssl.wrap(sock, {
    mode = "client",
    protocol = "any",
    options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1" },
    verify = "peer",
    cafile = self.ca_file,
  })
  if not wrapped then
    sock:close()
    return nil, "tls wrap: " .. tostring(werr)
  end
  wrapped:sni((self.host:gsub("%.$", "")))
  wrapped:settimeout(self.connect_timeout)
  local hok, herr = wrapped:dohandshake()
  if not hok then
    wrapped:close()
    return nil, "tls handshake: " .. tostring(herr)
  end
  local cert = wrapped:getpeercertificate()
  if not cert or not cert_matches(cert, self.host) then
    wrapped:close()
    return nil, "tls: the server certificate does not name " .. tostring(self.host)
  end
  return wrapped
end

-- AUTH on the new connection, with the password file (and the ACL user, when named).
-- Returns true, or nil and the error (the connection closed).
function Client:_auth()
  local password, perr = read_password(self.password_file)
  if not password then
    self:close()
    return nil, perr
  end
  local auth = self.username ~= "" and { "AUTH", self.username, password } or { "AUTH", password }
  local r, rerr = self:_roundtrip({ auth })
  if not r then return nil, rerr end
  if M.is_error(r[1]) then
    self:close()
    return nil, "AUTH failed: " .. r[1].err
  end
  return true
end

function Client:connect()
  if self.sock then return true end
  local addr, aerr = self:_address()
  if not addr then return nil, aerr end
  local sock = socket.tcp()
  sock:settimeout(self.connect_timeout)
  local ok, err = sock:connect(addr, self.port)
  if not ok then
    sock:close()
    self.addr_failed = true
    return nil, "connect " .. tostring(self.host) .. ":" .. tostring(self.port) .. ": " .. tostring(err)
  end
  self.addr_failed = false
  sock:setoption("tcp-nodelay", true)
  sock:setoption("keepalive", true)
  if self.tls then
    sock, err = self:_tls(sock)
    if not sock then return nil, err end
  end
  sock:settimeout(self.read_timeout)
  self.sock = sock
  if self.password_file ~= "" then
    ok, err = self:_auth()
    if not ok then return nil, err end
  end
  self.connects = self.connects + 1
  return true
end

-- Sends the commands in one write and reads as many replies. Transport failure closes.
function Client:_roundtrip(cmds)
  local buf = {}
  for i = 1, #cmds do buf[i] = M.encode(cmds[i]) end
  -- The whole round trip (write, then every reply) ends within one read timeout.
  local deadline = gettime() + self.read_timeout
  self.sock:settimeout(self.read_timeout)
  local ok, err = self.sock:send(table.concat(buf))
  if not ok then
    self:close()
    return nil, "send: " .. tostring(err), true
  end
  local replies = {}
  for i = 1, #cmds do
    local v, rerr, partial = read_reply(self.sock, deadline)
    if v == nil then
      self:close()
      -- The third result says whether resending is safe: only when the server cannot
      -- have run the commands, i.e. the send failed (above) or the connection was
      -- already closed before any byte of the first reply (a stale connection to a
      -- restarted server). Never after a timeout: the server may have run them, and a
      -- resent admit would take a second lease under the same connection id.
      return nil, "receive: " .. tostring(rerr), i == 1 and rerr == "closed" and (partial or "") == ""
    end
    replies[i] = v
  end
  return replies
end

--- Sends commands pipelined (one write, then all replies) and returns the replies.
-- A stale connection (the server restarted, or closed an idle connection) is detected
-- here; the pipeline is then retried once on a fresh connection when `retry_once` is set
-- and the server cannot have run it (never after a read timeout).
-- Returns replies (error replies included as values), or nil + transport error.
function Client:pipeline(cmds, retry_once)
  local fresh = self.sock == nil
  local ok, err = self:connect()
  if not ok then return nil, err end
  local replies, rerr, resendable = self:_roundtrip(cmds)
  if replies then return replies end
  if retry_once and not fresh and resendable then
    ok, err = self:connect()
    if not ok then return nil, err end
    return self:_roundtrip(cmds)
  end
  return nil, rerr
end

--- One command. Returns the reply (maybe an error reply) or nil + transport error.
function Client:call(...)
  local r, err = self:pipeline({ { ... } }, true)
  if not r then return nil, err end
  return r[1]
end

-- The wire command of one pipeline entry: { fn = name, keys = {...}, args = {...} } is an
-- FCALL of a function of the ws_admission library; anything else is a raw command array.
local function build(entry)
  if not entry.fn then return entry end
  local cmd = { "FCALL", entry.fn, #entry.keys }
  for i = 1, #entry.keys do cmd[#cmd + 1] = entry.keys[i] end
  for i = 1, #entry.args do cmd[#cmd + 1] = entry.args[i] end
  return cmd
end

-- A Redis without the library answers "ERR Function not found": say what to do.
local function explain(reply)
  if M.is_error(reply) and reply.err:find("Function not found", 1, true) then
    reply.err = reply.err .. " (the ws_admission library is not loaded in this Redis: an administrator loads it, "
      .. "FUNCTION LOAD REPLACE of lua/redis/ws_admission.lua; docs/operations.md)"
  end
  return reply
end

--- Runs a pipeline of function calls and raw commands in one round trip. Returns the
-- replies (error replies included as values), or nil + transport error.
function Client:run(entries)
  local cmds = {}
  for i, e in ipairs(entries) do cmds[i] = build(e) end
  local replies, err = self:pipeline(cmds, true)
  if not replies then return nil, err end
  for i = 1, #replies do explain(replies[i]) end
  return replies
end

--- FCALL of one function. Returns the reply (maybe an error reply) or nil + error.
function Client:fcall(name, keys, args)
  local r, err = self:run({ { fn = name, keys = keys, args = args } })
  if not r then return nil, err end
  return r[1]
end

return M
