-- Loads and checks the generated settings.lua (docs/internals.md, "settings.lua").
--
-- The file is `return { ... }`, written by the stack from its typed config. It is run
-- with an empty environment (it is data, not code: no globals, no require). The stack
-- has already validated every value against its one definition of the settings
-- (config/schema.ts, the README table): this side trusts that and checks only what a
-- stack/filter version drift or a hand edit of the file could break. Every field of the
-- contract must be present with its type, no other field may appear, and a value must be
-- one the filter can run with (no negative time, no key-unsafe hash tag); the stack's
-- policy ranges (a lease TTL of at least two renew intervals, timeouts of at most 10 s,
-- ...) are not repeated here.
local M = {}

local function is_int(v) return type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53 end

local function cluster_name(v) return v:match("^[%w_.:-]+$") ~= nil end
local function at_least(n) return function(v) return v >= n end end

-- field -> { type, check(value) -> ok, what is accepted }
local FIELDS = {
  backend_cluster = { "string", cluster_name, "a non-empty Envoy cluster name" },
  admin_cluster = { "string", cluster_name, "a non-empty Envoy cluster name" },
  capacity_cache_ms = { "integer", at_least(0), "an integer >= 0 (0 = off)" },
  rate_limit = { "integer", at_least(0), "an integer >= 0 (0 = no rate limit)" },
  rate_window_ms = { "integer", at_least(1), "a positive integer" },
  max_connections_per_pod = { "integer", at_least(1), "a positive integer" },
  lease_ttl_ms = { "integer", at_least(1), "a positive integer" },
  renew_interval_ms = { "integer", at_least(1), "a positive integer" },
  penalty_ms = { "integer", at_least(0), "an integer >= 0 (0 = no penalty)" },
  metrics_snapshot_ms = { "integer", at_least(100), "an integer >= 100" },
  redis_host = { "string", function(v) return v ~= "" and not v:find("[%s%c]") end, "a host name or address" },
  redis_port = { "integer", function(v) return v >= 1 and v <= 65535 end, "an integer from 1 to 65535" },
  redis_password_file = { "string", function() return true end, "a file path or \"\"" },
  redis_username = { "string", function(v) return #v <= 64 and v:match("^[%w_.-]*$") ~= nil end,
    "an ACL user name (letters, digits, _ . -, at most 64) or \"\"" },
  redis_tls = { "boolean" },
  redis_connect_timeout_ms = { "integer", at_least(1), "a positive integer" },
  redis_read_timeout_ms = { "integer", at_least(1), "a positive integer" },
  failure_mode = { "string", function(v) return v == "open" or v == "closed" end, "\"open\" or \"closed\"" },
  -- Part of every key name ({<tag>}:...): never a brace, a glob character or a space.
  hash_tag = { "string", function(v) return v:match("^[%w_.:-]+$") ~= nil and #v <= 64 end,
    "1-64 characters of letters, digits, _ . : - (no braces)" },
  limit_all_requests = { "boolean" },
  connection_inventory = { "boolean" },
  metrics_path = { "string", function(v) return v:sub(1, 1) == "/" and not v:find("[%s%c?#]") end, "a path starting with /" },
  client_identity = { "string", function(v) return v == "address" or v == "header" end, "\"address\" or \"header\"" },
  client_header = { "string", function(v) return v == "" or v:match("^[a-z0-9-]+$") ~= nil end,
    "a lower-case header name or \"\"" },
  client_ipv6_prefix_bits = { "integer", function(v) return v >= 1 and v <= 128 end, "an integer from 1 to 128" },
  max_connections_per_client = { "integer", at_least(0), "an integer >= 0 (0 = no cap)" },
  max_connections_per_client_percent = { "integer", function(v) return v >= 0 and v <= 100 end, "an integer from 0 to 100 (0 = no cap)" },
  rate_limit_per_client = { "integer", at_least(0), "an integer >= 0 (0 = no per-client rate limit)" },
}

M.FIELDS = FIELDS

local function describe(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

--- Checks a settings table. Returns the table, or nil and a list of messages, each
-- naming the field, the bad value and what would be accepted.
function M.check(t)
  local errs = {}
  if type(t) ~= "table" then
    return nil, { "settings.lua must return a table, got " .. type(t) }
  end
  local names = {}
  for name in pairs(FIELDS) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local spec, v = FIELDS[name], t[name]
    local want = spec[1]
    if v == nil then
      errs[#errs + 1] = "settings." .. name .. " is missing (want " .. want .. ")"
    elseif (want == "integer" and not is_int(v)) or (want ~= "integer" and type(v) ~= want) then
      errs[#errs + 1] = "settings." .. name .. " must be " .. (spec[3] or want) .. " (" .. want .. "), got "
        .. type(v) .. " " .. describe(v)
    elseif spec[2] and not spec[2](v) then
      errs[#errs + 1] = "settings." .. name .. " must be " .. spec[3] .. ", got " .. describe(v)
    end
  end
  local unknown = {}
  for k in pairs(t) do
    if type(k) ~= "string" or not FIELDS[k] then unknown[#unknown + 1] = tostring(k) end
  end
  table.sort(unknown)
  for _, k in ipairs(unknown) do
    errs[#errs + 1] = "settings." .. k .. " is not a known field (see docs/internals.md)"
  end
  if #errs == 0 then
    if t.renew_interval_ms >= t.lease_ttl_ms then
      errs[#errs + 1] = "settings.renew_interval_ms must be below lease_ttl_ms (" .. t.lease_ttl_ms .. "), got " .. t.renew_interval_ms
    end
  end
  if #errs > 0 then return nil, errs end
  return t
end

--- Loads `path` (settings.lua). Returns settings, or nil, messages, partial
-- (the raw table when it could be read, so a caller can still honour a valid
-- failure_mode while refusing the rest).
function M.load(path)
  local f, ferr = io.open(path, "rb")
  if not f then return nil, { "cannot read settings file " .. path .. ": " .. tostring(ferr) } end
  local src = f:read("*a")
  f:close()
  local chunk, perr = loadstring(src, "=" .. path)
  if not chunk then return nil, { "settings file " .. path .. " does not parse: " .. tostring(perr) } end
  setfenv(chunk, {})
  local ok, t = pcall(chunk)
  if not ok then return nil, { "settings file " .. path .. " failed to run: " .. tostring(t) } end
  local s, errs = M.check(t)
  if not s then return nil, errs, type(t) == "table" and t or nil end
  return s
end

--- Options for resp.new from checked settings (the public filter, the agent and drain.lua
-- talk to Redis alike).
function M.redis_options(S)
  return {
    host = S.redis_host, port = S.redis_port, password_file = S.redis_password_file, username = S.redis_username,
    tls = S.redis_tls, connect_timeout_ms = S.redis_connect_timeout_ms, read_timeout_ms = S.redis_read_timeout_ms,
  }
end

--- The proxy id: POD_NAME (downward API), else the host name (gethostname, may be nil),
-- made a DNS-1123-like name (lower case, [a-z0-9.-], at most 63 characters), so it can
-- never contain the `|` that ends it inside a connection id. filter.lua (which writes
-- the connection ids), the agent and drain.lua (which release them by this prefix) use it.
function M.proxy_id(gethostname)
  local p = os.getenv("POD_NAME")
  if (not p or p == "") and gethostname then p = gethostname() end
  p = (p or "unknown"):lower():gsub("[^a-z0-9.-]", "-"):sub(1, 63)
  if p == "" then p = "unknown" end
  return p
end

return M
