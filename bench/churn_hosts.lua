-- What one host list change costs outside Redis, under LuaJIT, for the churn bench
-- (bench/churn.ts), at each fleet size:
--   before  on every Envoy worker: parse the host file metrics.lua wrote (hosts.parse_file)
--           and name the new list's view (the pod set, keys.view_id), with the modules of
--           the contract before (commit 16e3563, given in <before dir>);
--   after   nothing on a worker; in the agent's own process, every poll (each second,
--           changed or not): parse admin /clusters (hosts.parse_clusters) and diff it
--           against what Redis holds (host_registry sync, its Redis calls stubbed).
-- CPU time (os.clock), the median of <repeats>, each on a list that differs from the
-- previous one by one replaced pod (so parse_file's memo of the last body never hits).
--
-- Usage: luajit churn_hosts.lua <before dir> <repository lua dir> <sizes,comma> <repeats>
-- Prints one line per size: pods, before ms, view id ms, after parse ms, sync ms, file
-- bytes, /clusters bytes (space-separated numbers).
local before_dir, lua_dir, sizes_arg, repeats_arg = arg[1], arg[2], arg[3], arg[4]
assert(before_dir and lua_dir and sizes_arg, "usage: luajit churn_hosts.lua <before dir> <lua dir> <sizes> <repeats>")
local REPEATS = tonumber(repeats_arg) or 9
local CLUSTER = "backend"

local function load_from(dir, name)
  local saved = package.path
  package.path = dir .. "/?.lua;" .. saved
  package.loaded[name] = nil
  local m = require(name)
  package.loaded[name] = nil
  package.path = saved
  return m
end

local old_hosts = load_from(before_dir, "hosts")
local old_keys = load_from(before_dir, "keys")
package.path = lua_dir .. "/envoy/?.lua;" .. lua_dir .. "/agent/?.lua;" .. package.path
local hosts = require("hosts")
local host_registry = require("host_registry")
local admission = require("admission")

local function pod(i)
  return string.format("10.%d.%d.%d:8080", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
end

-- Envoy's admin /clusters text for these hosts: one "<cluster>::<host>::<stat>::<value>"
-- line per fact, the facts Envoy lists for every host.
local STATS = {
  { "cx_active", "0" }, { "cx_connect_fail", "0" }, { "cx_total", "3" }, { "rq_active", "0" },
  { "rq_error", "0" }, { "rq_success", "3" }, { "rq_timeout", "0" }, { "rq_total", "3" },
  { "hostname", "" }, { "health_flags", "healthy" }, { "weight", "1" }, { "region", "" },
  { "zone", "" }, { "sub_zone", "" }, { "canary", "false" }, { "priority", "0" },
  { "success_rate", "-1" }, { "local_origin_success_rate", "-1" },
}
local function clusters_text(list)
  local out = { "envoy_admin::observability_name::envoy_admin", CLUSTER .. "::observability_name::" .. CLUSTER }
  for _, p in ipairs(list) do
    for _, s in ipairs(STATS) do out[#out + 1] = CLUSTER .. "::" .. p .. "::" .. s[1] .. "::" .. s[2] end
  end
  return table.concat(out, "\n") .. "\n"
end

local function median(xs)
  table.sort(xs)
  return xs[math.ceil(#xs / 2)]
end

local function timed(f)
  local t0 = os.clock()
  f()
  return (os.clock() - t0) * 1000
end

-- Lists of n pods, each one pod replaced after the previous.
local function lists(n, count)
  local base = {}
  for i = 1, n do base[i] = pod(i) end
  local out = {}
  for k = 1, count do
    local l = {}
    for i = 1, n do l[i] = base[i] end
    l[1 + (k - 1) % n] = pod(n + k)
    out[k] = l
  end
  return out
end

local S = { backend_cluster = CLUSTER, hash_tag = "ws", rate_limit = 0, rate_window_ms = 60000,
  max_connections_per_pod = 2, lease_ttl_ms = 30000, penalty_ms = 15000 }
local calls = admission.new(S)
-- Redis's side of the agent's calls, stubbed: claim gives slot 0, everything else OK.
local function run(entries)
  local e = entries[1]
  if e.args[1] == "claim" then return { 0 } end
  return { { "OK", #e.args - 3 } }
end

for size in sizes_arg:gmatch("%d+") do
  local n = tonumber(size)
  local ls = lists(n, REPEATS + 1)
  local parse, view, cparse, sync = {}, {}, {}, {}
  local file_bytes, clusters_bytes
  local reg = host_registry.new(S, "ws-envoy-bench", calls, "127.0.0.1:1", function() end)
  assert(reg:sync(ls[1], run))
  for k = 2, REPEATS + 1 do
    local text = old_hosts.format_file(ls[k], CLUSTER, 1700000000000 + k)
    file_bytes = #text
    local list
    parse[#parse + 1] = timed(function() list = assert(old_hosts.parse_file(text, CLUSTER)) end)
    -- host_source.view_of: the pod set (the chosen pod is checked against it) and the id.
    local v
    view[#view + 1] = timed(function()
      v = { set = {}, id = old_keys.view_id(list) }
      for i = 1, #list do v.set[list[i]] = true end
    end)
    assert(#v.id == 16 and v.set[list[1]])
    local body = clusters_text(ls[k])
    clusters_bytes = #body
    local healthy
    cparse[#cparse + 1] = timed(function() healthy = hosts.parse_clusters(body, CLUSTER) end)
    assert(#healthy == n, "parse_clusters found " .. #healthy .. " of " .. n)
    sync[#sync + 1] = timed(function() assert(reg:sync(healthy, run)) end)
  end
  io.write(string.format("%d %.4f %.4f %.4f %.4f %d %d\n", n, median(parse), median(view), median(cparse), median(sync),
    file_bytes, clusters_bytes))
end
