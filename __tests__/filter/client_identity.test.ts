// lua/envoy/client_identity.lua: who a client is, as a key of 16 hex digits. Pure functions
// of what Envoy hands the filter; never bytes a client chose in a key.
import { createHash } from 'crypto';
import { lua, luaString } from '../support/luajit';

/** FNV-1a 32 bits from `basis`, as the reference (BigInt, exact). */
function fnv1a(s: string, basis: number): string {
  let h = BigInt(basis);
  for (const b of Buffer.from(s, 'utf8')) h = ((h ^ BigInt(b)) * 16777619n) % 2n ** 32n;
  return h.toString(16).padStart(8, '0');
}
const keyOf = (identity: string) => fnv1a(identity, 2166136261) + fnv1a(identity, 0x6d2b79f5);

const S = (over: Record<string, unknown> = {}) => {
  const s = { client_identity: 'address', client_header: '', client_ipv6_prefix_bits: 64, ...over };
  return `{ ${Object.entries(s)
    .map(([k, v]) => `${k} = ${typeof v === 'string' ? luaString(v) : v}`)
    .join(', ')} }`;
};

describe('key: two FNV-1a hashes, 16 hex digits', () => {
  it.each(['', 'a', '4:203.0.113.9', 'h:alice', '\u00ff\u0000\u0080'.repeat(100), 'x'.repeat(5000)])(
    'GIVEN %j THEN the reference hash',
    (s) => {
      expect(lua(`out(require("client_identity").key(${luaString(s)}))`)).toBe(keyOf(s));
    },
  );

  it('spreads: 20,000 addresses, no two alike', () => {
    const keys = lua<string[]>(`local C, out_ = require("client_identity"), {}
for i = 0, 19999 do out_[#out_ + 1] = C.key(string.format("4:10.%d.%d.%d", math.floor(i / 65536), math.floor(i / 256) % 256, i % 256)) end
out(out_)`);
    expect(new Set(keys).size).toBe(20000);
    for (const k of keys.slice(0, 50)) expect(k).toMatch(/^[0-9a-f]{16}$/);
    // (Not a cryptographic hash: the key bounds and hides what a client sent, it proves nothing.)
    expect(createHash('sha256').update(keys.join()).digest('hex')).toHaveLength(64);
  });
});

describe('of_address: the identity of an address as Envoy gives it', () => {
  it.each([
    ['203.0.113.9:40000', 64, '4:203.0.113.9'],
    ['203.0.113.9', 64, '4:203.0.113.9'],
    ['[2001:db8:1:2:3:4:5:6]:443', 64, '6:2001:db8:1:2:0:0:0:0/64'],
    ['[2001:db8:1:2:ffff:4:5:6]:443', 48, '6:2001:db8:1:0:0:0:0:0/48'],
    ['[2001:db8:1:2:ffff:4:5:6]:443', 56, '6:2001:db8:1:0:0:0:0:0/56'],
    ['[2001:db8:1:2ff:ffff:4:5:6]:443', 56, '6:2001:db8:1:200:0:0:0:0/56'],
    ['[2001:db8::1]:443', 128, '6:2001:db8:0:0:0:0:0:1/128'],
    ['[::ffff:198.51.100.7]:5000', 64, '4:198.51.100.7'], // IPv4-mapped: the IPv4 client
    ['[::1]:80', 64, '6:0:0:0:0:0:0:0:0/64'],
    ['2001:db8::7', 64, '6:2001:db8:0:0:0:0:0:0/64'], // without brackets or port
  ])('GIVEN %j and /%i THEN %j', (addr, bits, want) => {
    expect(lua(`out(require("client_identity").of_address(${luaString(addr)}, ${bits}))`)).toBe(want);
  });

  it.each([
    ['', 'empty'],
    ['not an address', 'words'],
    ['[2001:db8:::1]:443', 'a triple colon'],
    ['[2001:db8:1:2:3:4:5:6:7]:443', 'nine groups'],
    ['[2001:db8:12345::1]:443', 'a group of five digits'],
    ['[zz::1]:443', 'not hex'],
    [`${'1'.repeat(70)}`, 'over 64 characters'],
  ])('GIVEN %j (%s) THEN nil', (addr) => {
    expect(lua(`out({ require("client_identity").of_address(${luaString(addr)}, 64) == nil })`)).toEqual([true]);
  });

  it('two addresses of one /64 are one client; of two /64s, two', () => {
    const [a, b, c] = lua<string[]>(`local C = require("client_identity")
out({ C.of_address("[2001:db8:0:1::a]:1", 64), C.of_address("[2001:db8:0:1:ffff::b]:2", 64), C.of_address("[2001:db8:0:2::a]:1", 64) })`);
    expect(a).toBe(b);
    expect(a).not.toBe(c);
  });
});

describe('of_request: the client key of a request', () => {
  const of = (s: string, header: string | null, addr: string | null) =>
    lua<string | null>(
      `local r = require("client_identity").of_request(${s}, ${header === null ? 'nil' : luaString(header)}, ${addr === null ? 'nil' : luaString(addr)}); out(r == nil and "nil" or r)`,
    );

  it('by address: the header is never read, whatever it says', () => {
    expect(of(S(), 'alice', '203.0.113.9:1')).toBe(keyOf('4:203.0.113.9'));
    expect(of(S(), null, '203.0.113.9:2')).toBe(keyOf('4:203.0.113.9'));
    expect(of(S(), null, 'garbage')).toBe('nil'); // no identity: the client limits do not apply
  });

  it('by header: its value, namespaced apart from addresses; absent, empty or over 256 bytes: the address', () => {
    const h = S({ client_identity: 'header', client_header: 'x-user-id' });
    expect(of(h, 'alice', '203.0.113.9:1')).toBe(keyOf('h:alice'));
    expect(of(h, '4:203.0.113.9', '198.51.100.1:1')).not.toBe(keyOf('4:203.0.113.9')); // a header cannot pose as an address
    expect(of(h, null, '203.0.113.9:1')).toBe(keyOf('4:203.0.113.9'));
    expect(of(h, '', '203.0.113.9:1')).toBe(keyOf('4:203.0.113.9'));
    expect(of(h, 'a'.repeat(257), '203.0.113.9:1')).toBe(keyOf('4:203.0.113.9'));
    expect(of(h, 'a'.repeat(256), '203.0.113.9:1')).toBe(keyOf('h:' + 'a'.repeat(256)));
  });
});
