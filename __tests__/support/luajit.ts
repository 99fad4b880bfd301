import { execFile, execFileSync } from 'child_process';
import * as path from 'path';

/**
 * Lua modules of the product run on their own under the real LuaJIT (no Envoy API): the
 * unit tests of lua/envoy/*.lua. The snippet runs with lua/envoy (and the harness, for
 * `json_out`) on package.path; `out(v)` writes v as JSON, which is what the call returns.
 */
export const ROOT = path.resolve(__dirname, '..', '..');
export const LUA_ENVOY = path.join(ROOT, 'lua', 'envoy');
const HARNESS = path.join(ROOT, '__tests__', 'filter', 'harness');

function program(code: string): string[] {
  const prelude = `package.path = ${JSON.stringify(`${LUA_ENVOY}/?.lua;${HARNESS}/?.lua;`)} .. package.path
local json = require("json_out")
local function out(v) io.write(json.encode(v)) end
`;
  return ['-e', prelude + code];
}

export interface LuaOptions {
  /** Added to this process's environment (e.g. WS_STATE_DIR). */
  readonly env?: Record<string, string>;
  /** Environment variables removed (e.g. POD_NAME, to see a default). */
  readonly unset?: readonly string[];
  readonly timeoutMs?: number;
}

function environment(o: LuaOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...o.env };
  for (const k of o.unset ?? []) delete env[k];
  return env;
}

/** Runs a snippet to its end; returns what it passed to `out()` (JSON), or undefined. */
export function lua<T = unknown>(code: string, o: LuaOptions = {}): T {
  const text = execFileSync('luajit', program(code), { encoding: 'utf8', timeout: o.timeoutMs ?? 20000, env: environment(o) });
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

/** The same, without blocking the test process (for snippets that talk to a server the test runs). */
export function luaAsync<T = unknown>(code: string, o: LuaOptions = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile('luajit', program(code), { encoding: 'utf8', timeout: o.timeoutMs ?? 20000, env: environment(o) }, (err, stdout, stderr) => {
      if (err) reject(new Error(`luajit failed: ${err.message}\n${stderr}`));
      else resolve((stdout === '' ? undefined : JSON.parse(stdout)) as T);
    });
  });
}

/** A Lua string literal for any text (byte-escaped: quotes, newlines, non-ASCII). */
export function luaString(s: string): string {
  let out = '"';
  for (const b of Buffer.from(s, 'utf8')) {
    if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c) out += String.fromCharCode(b);
    else out += '\\' + String(b).padStart(3, '0');
  }
  return out + '"';
}
