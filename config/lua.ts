/**
 * A tiny Lua literal writer for generated settings files: `return { key = value, ... }`.
 *
 * Only what the filter's settings need: strings, safe integers, booleans, as a flat table
 * with identifier keys. Anything else is refused rather than written approximately (a
 * float or a NaN in a limit must not reach the filter).
 */
export type LuaScalar = string | number | boolean;

const LUA_KEYWORDS = new Set([
  'and',
  'break',
  'do',
  'else',
  'elseif',
  'end',
  'false',
  'for',
  'function',
  'goto',
  'if',
  'in',
  'local',
  'nil',
  'not',
  'or',
  'repeat',
  'return',
  'then',
  'true',
  'until',
  'while',
]);

/**
 * A Lua string literal, escaped like `string.format('%q')`: backslash, quote and every
 * control byte are escaped; control bytes use the 3-digit `\ddd` form so a following
 * digit can never extend the escape.
 */
export function luaString(value: string): string {
  let out = '"';
  for (const byte of Buffer.from(value, 'utf8')) {
    if (byte === 0x5c) out += '\\\\';
    else if (byte === 0x22) out += '\\"';
    else if (byte === 0x0a) out += '\\n';
    else if (byte === 0x0d) out += '\\r';
    else if (byte === 0x09) out += '\\t';
    else if (byte < 0x20 || byte === 0x7f) out += '\\' + byte.toString().padStart(3, '0');
    else if (byte < 0x80) out += String.fromCharCode(byte);
    // Non-ASCII bytes also as \ddd: the file stays pure ASCII whatever the value holds.
    else out += '\\' + byte.toString().padStart(3, '0');
  }
  return out + '"';
}

export function luaValue(key: string, value: LuaScalar): string {
  if (typeof value === 'string') return luaString(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  throw new Error(`settings field ${key} must be a string, a boolean or a safe integer, got ${JSON.stringify(value) ?? String(value)}`);
}

/** `return { ... }` with one `key = value,` line per entry, in the given order. */
export function luaReturnTable(fields: ReadonlyArray<readonly [string, LuaScalar]>, header?: string): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  if (header) lines.push(...header.split('\n').map((l) => `-- ${l}`.trimEnd()));
  lines.push('return {');
  for (const [key, value] of fields) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key) || LUA_KEYWORDS.has(key)) {
      throw new Error(`settings field name ${JSON.stringify(key)} is not a Lua identifier; use letters, digits and "_" (not a keyword)`);
    }
    if (seen.has(key)) throw new Error(`settings field ${key} is given twice; each field must appear once`);
    seen.add(key);
    lines.push(`  ${key} = ${luaValue(key, value)},`);
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}
