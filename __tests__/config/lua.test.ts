// config/lua.ts: Lua literals written from TypeScript values (settings.lua is made of them),
// read back by LuaJIT byte for byte.
import { execFileSync } from 'child_process';
import { luaReturnTable, luaString } from '../../config/lua';

function luajit(script: string): string {
  return execFileSync('luajit', ['-e', script], { encoding: 'utf8' });
}

describe('Lua literal writer', () => {
  it('escapes strings so LuaJIT reads back the same bytes', () => {
    const nasty = 'quote " backslash \\ newline \n tab \t nul \0 bell \x07 del \x7f then 1 digit ü ]] [[ --';
    const out = luajit(`io.write(${luaString(nasty)})`);
    expect(out).toBe(nasty);
  });

  it('writes a control byte followed by a digit unambiguously', () => {
    expect(luaString('\x01' + '2')).toBe('"\\0012"');
    expect(luajit(`io.write(#${luaString('\x012')})`)).toBe('2');
  });

  it('refuses floats, NaN and unsafe integers', () => {
    expect(() => luaReturnTable([['rate_limit', 1.5]])).toThrow(
      'settings field rate_limit must be a string, a boolean or a safe integer, got 1.5',
    );
    expect(() => luaReturnTable([['x', Number.NaN]])).toThrow('settings field x must be a string, a boolean or a safe integer, got null');
    expect(() => luaReturnTable([['x', 2 ** 60]])).toThrow('settings field x must be a string, a boolean or a safe integer');
  });

  it('refuses keys that are not identifiers, keywords and duplicates', () => {
    expect(() => luaReturnTable([['bad-key', 1]])).toThrow('settings field name "bad-key" is not a Lua identifier');
    expect(() => luaReturnTable([['end', 1]])).toThrow('settings field name "end" is not a Lua identifier');
    expect(() =>
      luaReturnTable([
        ['a', 1],
        ['a', 2],
      ]),
    ).toThrow('settings field a is given twice');
  });
});
