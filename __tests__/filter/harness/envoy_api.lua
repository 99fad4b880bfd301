-- A reproduction of Envoy's HTTP Lua filter stream-handle API, enough to run
-- lua/envoy/filter.lua and metrics.lua unchanged under plain LuaJIT + luasocket.
--
-- Source of every behaviour below (cited per call as "docs: <section>"):
--   https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/lua_filter
-- (docs/root/configuration/http/http_filters/lua_filter.rst in envoyproxy/envoy), plus the
-- logging functions from docs/root/_include/lua_common.rst, and where the docs are
-- silent, the filter's source (source/extensions/filters/http/lua/wrappers.cc and
-- lua_filter.cc), cited as "source:".
--
-- What is modelled:
--  * envoy_on_request / envoy_on_response run as coroutines; a call that waits in
--    Envoy (httpCall, bodyChunks, respond) yields to the driver. (docs: "Stream handle API",
--    "All scripts are run as coroutines")
--  * a stream reset abandons both coroutines: they are never resumed again, so code
--    after a bodyChunks() loop never runs. (source: resumeCoroutine() checks
--    on_reset_called_ and returns without resuming)
--  * headers may be modified only until they are passed on: the coroutine returns, or
--    first waits for a body chunk -- except after an httpCall() in the same event, when
--    they stay held until data arrives (source: StreamHandleWrapper::start/onSuccess/
--    onData; see drive() in driver.lua). (docs: "headers()")
--  * respond() only in the request flow and only before the headers were passed on;
--    the script is not resumed after it, and its reply goes through envoy_on_response
--    like any other response. (docs: "respond()"; recorded from Envoy 1.40)
--  * what reaches envoy_on_response: a backend's answer through the router (which adds
--    x-envoy-upstream-service-time only after a complete request, so never to an
--    upgrade's answer) or the router's own local reply (driver.lua, router.ts).
--  * one Lua state per worker: the driver process is one worker; run several
--    processes for several workers or proxies. (docs: "per worker thread")
--
-- What is not: trailers, body() buffering, metadata(), filterContext(), crypto,
-- timestamps, the stream info's other methods; the filters do not use them.
local M = {}

local function lower(s) return (s:gsub("%u", string.lower)) end

local function deepcopy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deepcopy(x) end
  return t
end

-------------------------------------------------------------------------------
-- Header object. docs: "Header object API"
-------------------------------------------------------------------------------
local Headers = {}

local function headers_guard(self)
  if self._sealed() then
    error("header map can no longer be modified (headers were already passed to the next filter)", 3)
  end
end

local HeadersMethods = {
  -- docs: "add()": adds a header.
  add = function(self, k, v)
    assert(type(k) == "string" and type(v) == "string", "add(key, value) takes two strings")
    headers_guard(self)
    table.insert(self._list, { lower(k), v })
  end,
  -- docs: "get()": value or nil; several values of one (case-insensitive) key are
  -- joined with ",".
  get = function(self, k)
    k = lower(k)
    local vals = {}
    for _, kv in ipairs(self._list) do if kv[1] == k then vals[#vals + 1] = kv[2] end end
    if #vals == 0 then return nil end
    return table.concat(vals, ",")
  end,
  -- docs: "getAtIndex()"; the index is 0-based (source: luaGetAtIndex compares
  -- index >= size).
  getAtIndex = function(self, k, i)
    k = lower(k)
    local n = 0
    for _, kv in ipairs(self._list) do
      if kv[1] == k then
        if n == i then return kv[2] end
        n = n + 1
      end
    end
    return nil
  end,
  -- docs: "getNumValues()": 0 when absent.
  getNumValues = function(self, k)
    k = lower(k)
    local n = 0
    for _, kv in ipairs(self._list) do if kv[1] == k then n = n + 1 end end
    return n
  end,
  -- docs: "remove()": removes every value of the key.
  remove = function(self, k)
    headers_guard(self)
    k = lower(k)
    local out = {}
    for _, kv in ipairs(self._list) do if kv[1] ~= k then out[#out + 1] = kv end end
    self._list = out
  end,
  -- docs: "replace()": replaces, or adds when absent.
  replace = function(self, k, v)
    assert(type(k) == "string" and type(v) == "string", "replace(key, value) takes two strings")
    headers_guard(self)
    local lk = lower(k)
    local out, done = {}, false
    for _, kv in ipairs(self._list) do
      if kv[1] == lk then
        if not done then out[#out + 1] = { lk, v }; done = true end
      else
        out[#out + 1] = kv
      end
    end
    if not done then out[#out + 1] = { lk, v } end
    self._list = out
  end,
  -- docs: "setHttp1ReasonPhrase()": response flow only.
  setHttp1ReasonPhrase = function(self, p) self._reason = p end,
}

Headers.__index = HeadersMethods
-- docs: "__pairs()": iterates every header (one pair per value). Modifying the
-- headers during the iteration is an error; the iteration must run to its end
-- before any modification (docs: attention box under "__pairs()").
Headers.__pairs = function(self)
  local snapshot = {}
  for i, kv in ipairs(self._list) do snapshot[i] = kv end
  local i = 0
  self._iterating = true
  local real_guard = self._sealed
  self._sealed = function() return true end
  return function()
    i = i + 1
    local kv = snapshot[i]
    if not kv then
      self._iterating = false
      self._sealed = real_guard
      return nil
    end
    return kv[1], kv[2]
  end, self, nil
end

function M.headers(list, sealed_fn)
  local l = {}
  for i, kv in ipairs(list or {}) do l[i] = { lower(kv[1]), kv[2] } end
  return setmetatable({ _list = l, _sealed = sealed_fn or function() return false end }, Headers)
end

function M.header_list(h)
  local out = {}
  for i, kv in ipairs(h._list) do out[i] = { kv[1], kv[2] } end
  return out
end

-- The docs' `for key, value in pairs(headers)` needs a pairs() that honours __pairs
-- (LuaJIT's 5.2-compatibility build option, which Envoy's LuaJIT has: its builtin pairs
-- honours __pairs everywhere, in modules the filter requires too). Debian's luajit is
-- built without it, so the harness replaces the global pairs with this one (load_script).
function M.pairs52(t)
  local mt = getmetatable(t)
  if mt and mt.__pairs then return mt.__pairs(t) end
  return next, t, nil
end

-------------------------------------------------------------------------------
-- Buffer object (body chunks). docs: "Buffer API"
-------------------------------------------------------------------------------
local Buffer = {}
Buffer.__index = {
  length = function(self) return #self._data end,                                     -- docs: "length()"
  getBytes = function(self, i, n) return self._data:sub(i + 1, i + n) end,            -- docs: "getBytes()"
  setBytes = function(self, s) self._data = s end,                                    -- docs: "setBytes()"
}
function M.buffer(data) return setmetatable({ _data = data }, Buffer) end

-------------------------------------------------------------------------------
-- Stream handle. docs: "Stream handle API"
-------------------------------------------------------------------------------
-- One handle per direction of a stream (source: StreamHandleWrapper), made by
-- M.handle(stream, dir, env):
--   stream: the driver's record of one HTTP stream (shared by both directions)
--   dir:    "request" | "response"
--   env:    { clusters = { name = function(headers, body) -> headers, body }, log = function(level, msg) }
local Handle = {}
Handle.__index = Handle

-- docs: "headers()"
function Handle:headers() return self._side.headers end

-- docs: "bodyChunks()": an iterator over chunks as they arrive; Envoy suspends the
-- script between chunks and does not buffer them. Returns nil at end of stream.
-- Whether the headers are passed on while the script waits here depends on what came
-- before (after an httpCall() they stay held): modelled in driver.lua's drive().
function Handle:bodyChunks()
  return function()
    local chunk = coroutine.yield("body_chunk")
    if chunk == nil then return nil end
    return M.buffer(chunk)
  end
end

-- docs: "httpCall()": (cluster, headers, body, timeout_ms [, asynchronous]) or
-- (cluster, headers, body, options). ":method", ":path" and ":authority" must be set.
-- Returns response headers (table) and body (string or nil). The script is suspended
-- until the call completes (modelled by a yield to the driver).
function Handle:httpCall(cluster, headers, body, opt)
  assert(type(cluster) == "string", "httpCall: cluster must be a string")
  assert(type(headers) == "table", "httpCall: headers must be a table")
  for _, k in ipairs({ ":method", ":path", ":authority" }) do
    if not headers[k] then error("httpCall: header " .. k .. " must be set", 2) end
  end
  local timeout = type(opt) == "table" and opt.timeout_ms or opt
  assert(type(timeout) == "number" and timeout >= 0, "httpCall: timeout_ms must be an integer")
  local target = self._env.clusters[cluster]
  -- source: luaHttpCall raises "http call cluster invalid. Must be configured"
  if not target then error("http call cluster invalid. Must be configured", 2) end
  local rh, rb = coroutine.yield("http_call", function() return target(headers, body) end)
  return rh, rb
end

-- docs: "respond()": only in the request flow, only before the headers were passed
-- on; headers must contain ":status"; no further filter iteration. The script is
-- not resumed afterwards (source: luaRespond ends with lua_yield).
function Handle:respond(headers, body)
  if self._dir ~= "request" then error("respond() is only valid in the request flow", 2) end
  if self._side.headers_passed then error("respond() not permitted after the headers were passed on", 2) end
  assert(type(headers) == "table", "respond: headers must be a table")
  -- source: luaRespond raises ":status must be between 200-599"
  local st = tonumber(headers[":status"])
  if not st or st < 200 or st >= 600 or st % 1 ~= 0 then error(":status must be between 200-599", 2) end
  coroutine.yield("respond", { headers = deepcopy(headers), body = body })
  error("respond(): the script must not be resumed")
end

-- docs: "setUpstreamOverrideHost()" (Envoy 1.33.0 "lua: Added a new
-- setUpstreamOverrideHost()"): host must be an IP address (source: checked with
-- Http::Utility::parseAuthority(host).is_ip_address_, so "ip:port" and "[v6]:port"
-- are accepted); strict is an optional boolean (default false).
function Handle:setUpstreamOverrideHost(host, strict)
  if type(host) ~= "string" then error("setUpstreamOverrideHost: host must be a string", 2) end
  if not M.is_ip_authority(host) then error("host is not a valid IP address", 2) end
  if strict ~= nil and type(strict) ~= "boolean" then
    error("setUpstreamOverrideHost: strict must be a boolean", 2)
  end
  self._stream.override = { host = host, strict = strict or false }
end

-- docs: "streamInfo()" -> "Stream info object API". One object per stream handle, made
-- on the first call and returned again after (source: lua_filter.cc,
-- StreamHandleWrapper::luaStreamInfo keeps stream_info_wrapper_).
function Handle:streamInfo()
  self._stream_info = self._stream_info or M.stream_info(self._stream)
  return self._stream_info
end

-- docs: "connection()" -> "Connection object API": ssl() is nil on plain text.
function Handle:connection()
  local stream = self._stream
  return { ssl = function() return stream.ssl end }
end

-- lua_common.rst: "log*()": logTrace/logDebug/logInfo/logWarn/logErr/logCritical.
for _, lvl in ipairs({ "Trace", "Debug", "Info", "Warn", "Err", "Critical" }) do
  Handle["log" .. lvl] = function(self, msg) self._env.log(lvl:lower(), tostring(msg)) end
end

function M.handle(stream, dir, env)
  return setmetatable({ _stream = stream, _dir = dir, _side = stream[dir], _env = env }, Handle)
end

-------------------------------------------------------------------------------
-- Stream info. docs: "Stream info object API"
-------------------------------------------------------------------------------
-- Envoy 1.40's object has exactly: protocol, routeName, virtualClusterName,
-- requestedServerName, downstreamLocalAddress, downstreamDirectLocalAddress,
-- downstreamRemoteAddress, downstreamDirectRemoteAddress, downstreamSslConnection,
-- dynamicMetadata, dynamicTypedMetadata, filterState, drainConnectionUponCompletion
-- (listed from a real Envoy's metatable): nothing about the upstream host or the
-- response flags. Those the filters use are modelled; calling another one fails here.
local StreamInfo = {}
StreamInfo.__index = StreamInfo

function StreamInfo:protocol() return self._stream.protocol or "HTTP/1.1" end                    -- docs: "protocol()"
function StreamInfo:downstreamRemoteAddress() return self._stream.remote end                     -- docs: "downstreamRemoteAddress()"
function StreamInfo:downstreamDirectRemoteAddress() return self._stream.remote end               -- docs: "downstreamDirectRemoteAddress()"
function StreamInfo:downstreamLocalAddress() return self._stream.local_addr or "10.1.0.5:8080" end -- docs: "downstreamLocalAddress()"
function StreamInfo:routeName() return self._stream.route or "" end                              -- docs: "routeName()"

-- docs: "dynamicMetadata()" -> "Dynamic metadata object API". One object per stream info
-- (source: StreamInfoWrapper::luaDynamicMetadata keeps dynamic_metadata_wrapper_).
function StreamInfo:dynamicMetadata()
  self._metadata = self._metadata or M.dynamic_metadata(self._stream)
  return self._metadata
end

function M.stream_info(stream)
  return setmetatable({ _stream = stream }, StreamInfo)
end

-- set(filterName, key, value) / get(filterName) returning a copy of that filter's table
-- (nil when none). The stream's metadata is shared by both directions and the access log.
local DynamicMetadata = {}
DynamicMetadata.__index = DynamicMetadata

function DynamicMetadata:set(ns, key, value)
  assert(type(ns) == "string" and type(key) == "string", "dynamicMetadata:set(filterName, key, value)")
  local md = self._stream.metadata
  md[ns] = md[ns] or {}
  md[ns][key] = deepcopy(value)
end

function DynamicMetadata:get(ns)
  return deepcopy(self._stream.metadata[ns])
end

function M.dynamic_metadata(stream)
  return setmetatable({ _stream = stream }, DynamicMetadata)
end

-- Http::Utility::parseAuthority(...).is_ip_address_: an IPv4 or IPv6 literal, with
-- an optional port (IPv6 bracketed when a port follows).
function M.is_ip_authority(s)
  local host, port = s:match("^%[([%x:.]+)%]:?(%d*)$")
  if host then
    if not host:find(":") then return false end
    return port == "" or (tonumber(port) and tonumber(port) <= 65535) or false
  end
  host, port = s:match("^([%d.]+):?(%d*)$")
  if host then
    local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then return false end
    for _, o in ipairs({ a, b, c, d }) do if tonumber(o) > 255 then return false end end
    return port == "" or (tonumber(port) <= 65535)
  end
  -- bare IPv6 without brackets and without port
  return s:match("^[%x:]+$") ~= nil and s:find(":") ~= nil
end

-------------------------------------------------------------------------------
-- Loading a filter script the way Envoy does: one chunk, globals in its own env.
-------------------------------------------------------------------------------
function M.load_script(path)
  local chunk, err = loadfile(path)
  if not chunk then error(err) end
  _G.pairs = M.pairs52
  local env = setmetatable({}, { __index = _G })
  setfenv(chunk, env)
  chunk()
  return env
end

return M
