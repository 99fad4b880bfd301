-- One Envoy worker (one Lua state) driven over stdin/stdout by the jest tests.
--
-- Usage: luajit driver.lua <script.lua>   (filter.lua or metrics.lua)
-- Environment: WS_LUA_DIR, WS_STATE_DIR, POD_NAME, as in the Envoy container.
--
-- Protocol: one command per stdin line, a Lua table literal (written by
-- harness/worker.ts, trusted test input); one JSON reply per stdout line.
--   {op="admin", name="envoy_admin", state="LIVE", down=false}   -- the fake admin: what /ready reports
--                                       (LIVE, DRAINING, ...), or unreachable
--   {op="request", sid="s1", headers={{":method","GET"},...}, remote="203.0.113.9:5000", protocol="HTTP/1.1",
--    defer_http=true}                                              -- httpCall() stays pending until:
--   {op="http_complete", sid="s1"}
--   {op="response", sid="s1", headers={{":status","101"}}}       -- the backend's answer, through the router
--   {op="local_reply", sid="s1", headers={{":status","503"},...}} -- the router's own answer (no backend reached)
--   {op="data", sid="s1", dir="request"|"response", bytes=N}    -- one body chunk
--   {op="end", sid="s1", dir="request"|"response"}               -- end of stream in that direction
--   {op="reset", sid="s1"}                                        -- stream reset: coroutines abandoned
--   {op="clock", at=MS} | {op="clock", advance=MS} | {op="clock"}  -- the worker's clock
--                                      (runtime.lua): driven from now on, moved, or the wall clock again
--   {op="logs"}  {op="bench", ...}  {op="exit"}
package.path = arg[0]:gsub("[^/]+$", "") .. "?.lua;" .. package.path
local api = require("envoy_api")
local json = require("json_out")

local script = assert(arg[1], "usage: luajit driver.lua <script.lua>")

local logs = {}
local admin = { name = "envoy_admin", down = false, calls = 0, state = "LIVE", paths = {} }

local env = {
  clusters = {},
  log = function(level, msg)
    logs[#logs + 1] = { level = level, msg = msg }
    if os.getenv("HARNESS_VERBOSE") then io.stderr:write("[" .. level .. "] " .. msg .. "\n") end
  end,
}

-- The admin's loopback cluster, as httpCall() reaches it.
local function admin_cluster(headers)
  admin.calls = admin.calls + 1
  local path = headers[":path"]
  admin.paths[path] = (admin.paths[path] or 0) + 1
  if admin.down then
    -- What Envoy's async client hands back when the upstream cannot be reached.
    return { [":status"] = "503" }, "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
  end
  if path == "/ready" then
    -- Admin /ready (source: server/admin/server_info_handler.cc handlerReady): the server
    -- state name and a newline; 200 only when LIVE, else 503 (PRE_INITIALIZING,
    -- INITIALIZING, DRAINING after /healthcheck/fail).
    return { [":status"] = admin.state == "LIVE" and "200" or "503",
      ["content-type"] = "text/plain; charset=UTF-8" }, admin.state .. "\n"
  end
  return { [":status"] = "404" }, "invalid path. "
end
local function install_clusters()
  env.clusters = { [admin.name] = admin_cluster }
end
install_clusters()

local filter = api.load_script(script)

local streams = {}
local new_side

-- A script error (source: Filter::scriptError()) logs, counts and drops both stream
-- wrappers; the stream continues without the script, the other coroutine is never
-- resumed either.
local function script_error(stream, dir, what)
  local side = stream[dir]
  side.state = "error"
  side.error = tostring(what)
  env.log("err", "script error: " .. tostring(what))
  side.headers_passed = true
  local other = stream[dir == "request" and "response" or "request"]
  if other and other.co and other.state == "waiting_body" then
    other.co = nil
    other.state = "error"
    other.error = "dropped by a script error in the " .. dir .. " flow"
    other.headers_passed = true
  end
end

-- The script answered itself (respond()): Envoy encodes that local reply through the
-- encoder filters, this one's envoy_on_response included, with the script's headers and,
-- for a body, content-length and a default content-type (recorded from Envoy 1.40:
-- respond({":status"="429"}, "x") reaches envoy_on_response as :status, content-length 1,
-- content-type text/plain; an empty body adds nothing).
local function respond_downstream(stream, reply)
  local list = {}
  for k, v in pairs(reply.headers) do list[#list + 1] = { k, v } end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  if reply.body and reply.body ~= "" then
    if not reply.headers["content-length"] then list[#list + 1] = { "content-length", tostring(#reply.body) } end
    if not reply.headers["content-type"] then list[#list + 1] = { "content-type", "text/plain" } end
  end
  new_side(stream, "response", list)
end

-- Runs (or resumes) one direction's coroutine until it waits for body data, responds,
-- returns or fails; httpCall yields are served in place.
--
-- When the headers are passed on to the next filter (side.headers_passed) follows
-- Envoy's StreamHandleWrapper (source: lua_filter.cc):
--  * start() (decodeHeaders/encodeHeaders) answers StopIteration while the script waits
--    in httpCall(), body() or after respond(), and Continue otherwise -- also when it
--    waits for a body chunk: bodyChunks() does not hold the headers back.
--  * onSuccess() of an httpCall() resumes the script and calls continueIteration() only
--    if the script then returned (state Running). If it waits for a body chunk instead,
--    nothing is continued: the headers stay held until the next data frame arrives
--    (onData() answers Continue, passing headers and data together).
--  * onData() answers StopIterationAndWatermark while an httpCall() is pending, and
--    Continue when the script returned or waits for the next chunk.
-- So "waited for a body chunk" passes the headers on unless an httpCall() happened
-- since this event started the script.
local function drive(stream, dir, ...)
  local side = stream[dir]
  local co = side.co
  local http_called = side.resume_after_http or false
  side.resume_after_http = nil
  local ok, what, payload = coroutine.resume(co, ...)
  while true do
    if not ok then return script_error(stream, dir, what) end
    if coroutine.status(co) == "dead" then
      side.state = "done"
      side.headers_passed = true
      return
    end
    if what == "http_call" then
      http_called = true
      if stream.defer_http then
        -- The call stays pending until the test completes it (op http_complete): in
        -- Envoy other streams of the worker run meanwhile.
        side.state = "waiting_http"
        side.pending_http = payload
        return
      end
      ok, what, payload = coroutine.resume(co, payload())
    elseif what == "body_chunk" then
      side.state = "waiting_body"
      if not http_called then side.headers_passed = true end
      return
    elseif what == "respond" then
      side.state = "responded"
      stream.local_reply = payload
      return respond_downstream(stream, payload)
    else
      ok, what = false, "unexpected yield " .. tostring(what)
    end
  end
end

local function describe(stream, dir)
  local side = stream[dir]
  local r = { state = side.state, error = side.error, headers = api.header_list(side.headers),
    passed = side.headers_passed }
  if dir == "request" then
    r.override = stream.override
    if stream.local_reply then
      local hs = {}
      for k, v in pairs(stream.local_reply.headers) do hs[k] = v end
      r.reply = { headers = hs, body = stream.local_reply.body }
    end
  end
  r.metadata = stream.metadata
  return r
end

function new_side(stream, dir, headers)
  local side = { state = "new", headers_passed = false }
  stream[dir] = side
  side.headers = api.headers(headers, function() return side.headers_passed end)
  local h = api.handle(stream, dir, env)
  local fn = dir == "request" and filter.envoy_on_request or filter.envoy_on_response
  if not fn then
    side.state = "done"
    side.headers_passed = true
    return
  end
  side.co = coroutine.create(fn)
  drive(stream, dir, h)
end

local ops = {}

function ops.admin(c)
  admin.name = c.name or admin.name
  admin.down = c.down or false
  admin.state = c.state or "LIVE"
  install_clusters()
  return { ok = true }
end

-- An HTTP/2 (or /3) extended CONNECT (RFC 8441: :method CONNECT + :protocol) reaches the
-- filter chain as an HTTP/1 upgrade: the server codec rewrites it before decodeHeaders
-- (source: http2/codec_impl.cc ServerStreamImpl::decodeHeaders ->
-- Utility::transformUpgradeRequestFromH2toH1: :method GET, upgrade = :protocol,
-- connection = upgrade, :protocol removed). Its success is likewise seen as 101 by the
-- filters and turned into 200 only when encoded downstream
-- (transformUpgradeResponseFromH1toH2 in ServerStreamImpl::encodeHeaders).
local function h2_upgrade_to_h1(list)
  local method, proto
  for _, kv in ipairs(list or {}) do
    if kv[1] == ":method" then method = kv[2] elseif kv[1] == ":protocol" then proto = kv[2] end
  end
  if method ~= "CONNECT" or not proto then return list end
  local out = {}
  for _, kv in ipairs(list) do
    if kv[1] == ":method" then out[#out + 1] = { ":method", "GET" }
    elseif kv[1] ~= ":protocol" then out[#out + 1] = kv end
  end
  out[#out + 1] = { "upgrade", proto }
  out[#out + 1] = { "connection", "upgrade" }
  return out
end

-- An upgrade request for Envoy's HTTP/1 codec: an Upgrade header and the `upgrade` token
-- in Connection (blanks, token, blanks: linear; a "(.-)" trim backtracks on long runs).
local function is_upgrade(headers)
  local up, conn = false, false
  for _, kv in ipairs(headers or {}) do
    if kv[1] == "upgrade" then up = true end
    if kv[1] == "connection" then
      for t in kv[2]:gmatch("[^,]+") do
        if (t:match("^[ \t]*([^ \t]*)[ \t]*$") or ""):lower() == "upgrade" then conn = true end
      end
    end
  end
  return up and conn
end

function ops.request(c)
  local stream = { metadata = {}, remote = c.remote or "203.0.113.9:40000", protocol = c.protocol,
    defer_http = c.defer_http }
  streams[c.sid] = stream
  local headers = h2_upgrade_to_h1(c.headers)
  local upgrade = is_upgrade(headers)
  -- source: http1/codec_impl.cc dispatches an upgrade request's headers without end of
  -- stream and swallows its message end (the upgraded bytes follow): the request never
  -- completes. A plain request (these have no body) completes with its headers.
  stream.request_complete = not upgrade
  new_side(stream, "request", headers)
  -- An HTTP/1.1 upgrade request: once its headers are passed on, real Envoy (1.40) hands
  -- a script waiting in bodyChunks() one empty chunk, before any response (recorded by
  -- __tests__/e2e/envoy-api.test.ts).
  local side = stream.request
  if upgrade and side.state == "waiting_body" and side.headers_passed then drive(stream, "request", "") end
  return describe(stream, "request")
end

-- Completes a request's pending httpCall() (requests sent with defer_http): Envoy's
-- onSuccess() resumes the script; see drive() for what happens to the headers then.
function ops.http_complete(c)
  local stream = assert(streams[c.sid], "unknown stream " .. tostring(c.sid))
  if stream.reset then return { state = "reset" } end
  local side = stream.request
  if not side or side.state ~= "waiting_http" then error("no pending httpCall on " .. tostring(c.sid)) end
  local call = side.pending_http
  side.pending_http = nil
  side.resume_after_http = true
  side.state = "running"
  drive(stream, "request", call())
  return describe(stream, "request")
end

-- A response can only come from the router: it needs the request headers passed on to it
-- (not held by the script) and no answer given already (the script's respond()).
local function routed(c)
  local stream = assert(streams[c.sid], "unknown stream " .. tostring(c.sid))
  if stream.reset then return nil end
  local rq = stream.request
  if rq and rq.state == "responded" then error("the script answered this request itself: no other response possible") end
  if rq and not rq.headers_passed then
    error("request headers were never passed on to the router (held by the Lua script): no upstream response possible")
  end
  if stream.response then error("this stream has a response already") end
  return stream
end

-- The backend's answer. The router adds x-envoy-upstream-service-time only when the
-- downstream request was complete (source: router.cc onUpstreamHeaders, "Only send
-- upstream service time if we received the complete request"): never on the answer to
-- an upgrade request, whatever its status (seen in Envoy 1.40: a backend's 403 to a
-- WebSocket upgrade reaches envoy_on_response without it).
function ops.response(c)
  local stream = routed(c)
  if not stream then return { state = "reset" } end
  local headers = {}
  for i, kv in ipairs(c.headers or {}) do headers[i] = kv end
  if stream.request_complete then headers[#headers + 1] = { "x-envoy-upstream-service-time", "1" } end
  new_side(stream, "response", headers)
  -- A 101 to an HTTP/1.1 upgrade: Envoy's codec switches both directions to raw bytes
  -- (source: http1/codec_impl.cc), which never end with an end flag. Right after the
  -- 101, real Envoy (1.40) hands the response flow one empty body chunk (recorded by
  -- __tests__/e2e/envoy-api.test.ts).
  for _, kv in ipairs(headers) do
    if kv[1] == ":status" and kv[2] == "101" then
      stream.upgraded = true
      local side = stream.response
      if side.state == "waiting_body" then drive(stream, "response", "") end
    end
  end
  return describe(stream, "response")
end

-- The router's own answer when no backend was reached (the strict override host is gone:
-- 503 "no healthy upstream", flag UH; the connection failed: flag UF). The headers are
-- the test's (worker.ts builds them as Envoy does, with the bootstrap's local reply
-- mappers); the router adds none of its own.
function ops.local_reply(c)
  local stream = routed(c)
  if not stream then return { state = "reset" } end
  new_side(stream, "response", c.headers)
  return describe(stream, "response")
end

local function feed(c, chunk)
  local stream = assert(streams[c.sid], "unknown stream " .. tostring(c.sid))
  if stream.reset then return { state = "reset" } end
  if chunk == nil and stream.upgraded then
    -- source: http1/codec_impl.cc passes upgraded bytes without an end flag, and the
    -- connection manager resets the stream when either connection closes
    -- (resetAllStreams, codec_client.cc): seen end to end in __tests__/e2e.
    error("an upgraded HTTP/1.1 stream never ends normally in Envoy: every end is a reset (use reset)")
  end
  if chunk == nil and c.dir == "request" then stream.request_complete = true end
  local side = stream[c.dir]
  if not side then return { state = "absent" } end
  if side.state == "waiting_body" then drive(stream, c.dir, chunk) end
  return describe(stream, c.dir)
end

local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
-- After a 101 the bytes are WebSocket frames (RFC 6455 5.2): a filler chunk is one text
-- frame of c.bytes bytes in all, masked from the client as the RFC requires.
local function text_frame(n, masked)
  local mask = masked and 4 or 0
  local len = math.max(0, n - 2 - mask)
  local head
  if len <= 125 then
    head = string.char(0x81, (masked and 0x80 or 0) + len)
  else
    len = math.min(math.max(0, n - 4 - mask), 65535)
    head = string.char(0x81, (masked and 0x80 or 0) + 126, math.floor(len / 256), len % 256)
  end
  return head .. (masked and "\0\0\0\0" or "") .. string.rep("x", len)
end
function ops.data(c)
  if c.hex then return feed(c, unhex(c.hex)) end
  return feed(c, text_frame(c.bytes or 16, c.dir == "request"))
end
ops["end"] = function(c) return feed(c, nil) end

-- A reset: Envoy never resumes the coroutines again (source: resumeCoroutine checks
-- on_reset_called_). We drop them; nothing after a bodyChunks() loop runs.
function ops.reset(c)
  local stream = streams[c.sid]
  if stream then
    stream.reset = true
    if stream.request then stream.request.co = nil end
    if stream.response then stream.response.co = nil end
  end
  streams[c.sid] = nil
  collectgarbage()
  return { ok = true }
end

-- The worker's clock (runtime.now_ms): the filter's caches and timers follow it; Redis
-- and socket timeouts keep real time.
local driven
function ops.clock(c)
  local runtime = package.loaded["runtime"] or require("runtime")
  if c.at then driven = c.at elseif c.advance then driven = (driven or runtime.now_ms()) + c.advance else driven = nil end
  runtime.set_clock(driven and function() return driven end or nil)
  return { ok = true, now = runtime.now_ms() }
end

function ops.logs()
  local l = logs
  logs = {}
  return { logs = l, admin_calls = admin.calls, admin_paths = admin.paths }
end

function ops.bench(c)
  return require("bench").run(c, { api = api, filter = filter, env = env, new_side = new_side, streams = streams })
end

function ops.exit() os.exit(0) end

local function answer(line)
  local chunk, perr = loadstring("return " .. line)
  if not chunk then return { error = "bad command: " .. tostring(perr) } end
  setfenv(chunk, {})
  local okc, cmd = pcall(chunk)
  if not okc or type(cmd) ~= "table" or not ops[cmd.op] then return { error = "bad command: " .. line:sub(1, 200) } end
  local okr, r = pcall(ops[cmd.op], cmd)
  return okr and r or { error = tostring(r) }
end

io.stdout:setvbuf("no")
io.stdout:write(json.encode({ ready = true }), "\n")
for line in io.lines() do
  io.stdout:write(json.encode(answer(line)), "\n")
end
