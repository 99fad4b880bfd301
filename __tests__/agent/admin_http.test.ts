// lua/agent/admin_http.lua: the agent's HTTP/1.1 client for Envoy's loopback admin, against
// raw answers written byte for byte: a length, Envoy's chunked streaming (a boundary inside
// a line of the page), an answer read to the close, and answers that break off.
import * as net from 'net';
import * as path from 'path';
import { ROOT, luaAsync, luaString } from '../support/luajit';

/** A server that writes `raw` to every connection once the request is in, then closes. */
async function rawServer(raw: Buffer): Promise<{ address: string; close: () => Promise<void> }> {
  const server = net.createServer((s) => {
    s.once('data', () => s.end(raw));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as net.AddressInfo;
  return { address: `127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

async function request(raw: string | Buffer): Promise<[number | null, string]> {
  const s = await rawServer(Buffer.from(raw));
  try {
    const r = await luaAsync<{
      status: number | false;
      body: string;
    }>(`package.path = ${luaString(path.join(ROOT, 'lua', 'agent') + '/?.lua;')} .. package.path
local status, body = require("admin_http").request(${luaString(s.address)}, "GET", "/clusters")
out({ status = status or false, body = body })`);
    return [r.status === false ? null : r.status, r.body];
  } finally {
    await s.close();
  }
}

const HEAD = 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n';

describe('admin_http.request', () => {
  it('GIVEN a Content-Length THEN exactly that body', async () => {
    expect(await request(`${HEAD}content-length: 5\r\n\r\nhello`)).toEqual([200, 'hello']);
  });

  it("GIVEN Envoy's chunked streaming with a boundary inside a line THEN the page without the size lines", async () => {
    const page = 'backend::10.0.0.1:8080::health_flags::healthy\nbackend::10.0.0.2:8080::health_flags::healthy\n';
    const [a, b] = [page.slice(0, 30), page.slice(30)];
    const chunked = `${a.length.toString(16)}\r\n${a}\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
    expect(await request(`${HEAD}transfer-encoding: chunked\r\n\r\n${chunked}`)).toEqual([200, page]);
  });

  it('GIVEN neither THEN the body up to the close', async () => {
    expect(await request(`${HEAD}connection: close\r\n\r\nall of it`)).toEqual([200, 'all of it']);
  });

  it.each([
    ['a size line that is not hex', 'zz\r\nabc\r\n0\r\n\r\n'],
    ['a chunk shorter than its size', 'a\r\nabc'],
    ['no last chunk', '3\r\nabc\r\n'],
  ])('GIVEN a chunked answer with %s THEN nil and why (never an error that ends the agent)', async (_what, chunks) => {
    const [status, why] = await request(`${HEAD}transfer-encoding: chunked\r\n\r\n${chunks}`);
    expect(status).toBeNull();
    expect(why).toMatch(/chunked answer from 127\.0\.0\.1:\d+\/clusters broke off/);
  });

  it('GIVEN no HTTP answer THEN nil and why', async () => {
    const [status, why] = await request('SSH-2.0-OpenSSH\r\n');
    expect(status).toBeNull();
    expect(why).toMatch(/no HTTP answer from 127\.0\.0\.1:\d+\/clusters/);
  });
});
