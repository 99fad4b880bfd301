// lua/envoy/keys.lua: the key schema (lua/redis/README.md "Key schema") and the form of a
// connection id, which every Lua caller takes from here.
import { keysFor } from '../redis/support/functions';
import { lua, luaString } from '../support/luajit';

describe('keys.lua', () => {
  it("GIVEN a hash tag THEN every key of the contract under it, the same as the tests' reading of the README", () => {
    const k = lua<Record<string, string>>(`out(require("keys").new("prod-1"))`);
    const want = keysFor('prod-1');
    expect(k).toEqual({
      rate: want.rate,
      rate_requests: want.rateRequests,
      stats: want.stats,
      leases: want.leases,
      load: want.load,
      reach: want.reach,
      down: want.down,
      agents: want.agents,
      beats: want.beats,
      recovery: want.recovery,
      inventory: want.inventory,
      clients: want.clients,
      crate: want.crate,
      crate_t: want.crateT,
    });
  });

  it.each([
    ['envoy-a|abcdef|1|0a1b2c', true],
    ['ws-envoy-6f7c9d8b5d-x7k2p|a1b2c3|99999|ffffff', true],
    ['Envoy|abcdef|1|0a1b2c', false], // the proxy part is lower case
    ['envoy a|abcdef|1|0a1b2c', false],
    ['envoy|xyz|1|0a1b2c', false],
    ['envoy|abcdef|-1|0a1b2c', false],
    ['envoy|abcdef|1', false],
    ['envoy|abcdef|1|0a1b2c|x', false],
    ['envoy|abcdef|1|0a1b2c|0123456789abcdef', true], // with a client key
    ['envoy|abcdef|1|0a1b2c|0123456789abcde', false], // a client key is 16 hex digits
    ['envoy|abcdef|1|0a1b2c|0123456789abcdefg', false],
    ['{ws}:stats|ab|1|cd', false],
    [`${'a'.repeat(190)}|abcdef|1|0a1b2c`, false], // over 200 characters
  ])('valid_connection_id(%j) = %j', (id, want) => {
    expect(lua(`out({ require("keys").valid_connection_id(${luaString(id)}) })`)).toEqual([want]);
  });
});
