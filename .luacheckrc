-- luacheck (Debian lua-check) over every Lua file of the repository: part of `npm run lint`
-- and of `npm test` (__tests__/lint).
std = "luajit"
-- The code's own limit: long lines are mostly error messages kept whole so
-- that they can be found with grep.
max_line_length = 140
-- Methods keep `self` in their signature for the `obj:method()` call form even when the
-- body does not need it (the Envoy API reproduction mirrors Envoy's method set).
-- The same for `self` of a method defined inside another method (the reproduction's
-- nested API objects).
ignore = { "212/self", "432/self" }

-- Redis scripts: Redis' Lua 5.1 sandbox and its globals.
files["lua/redis"] = { std = "lua51", read_globals = { "KEYS", "ARGV", "redis", "cjson", "cmsgpack", "bit", "struct" } }
-- The Envoy Lua filters define their entry points as globals (Envoy calls them by name).
files["lua/envoy/filter.lua"] = { globals = { "envoy_on_request", "envoy_on_response" } }
files["lua/envoy/metrics.lua"] = { globals = { "envoy_on_request", "envoy_on_response" } }
files["__tests__/filter/harness"] = { globals = { "envoy_on_request", "envoy_on_response" } }
