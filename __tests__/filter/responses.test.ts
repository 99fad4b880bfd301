// lua/envoy/responses.lua: the answers the filter gives itself (docs/filter.md, "Responses the
// filter sends itself"), exactly as they reach the client.
import { lua } from '../support/luajit';

const respond = (call: string) =>
  lua<{ headers: Record<string, string>; body: string }>(`local got
local h = { respond = function(_, headers, body) got = { headers = headers, body = body } end }
local R = require("responses")
${call}
out(got)`);

describe('responses.lua', () => {
  it('rate_limited: 429, Retry-After in whole seconds (rounded up), RateLimit-* of the window', () => {
    expect(respond('R.rate_limited(h, 60, 1001)')).toEqual({
      headers: {
        ':status': '429',
        'retry-after': '2',
        'ratelimit-limit': '60',
        'ratelimit-remaining': '0',
        'ratelimit-reset': '2',
        'content-type': 'text/plain',
        'x-ws-admission': 'rate_limited',
      },
      body: 'too many WebSocket upgrades, retry later\n',
    });
  });

  it.each([
    ['R.full(h, 4200)', 'capacity', '5', 'all backends are at their connection limit, retry later\n'],
    ['R.full(h, 1)', 'capacity', '1', 'all backends are at their connection limit, retry later\n'],
    ['R.no_backend(h)', 'no_backend', '1', 'no backend available\n'],
    ['R.recovering(h, 8500)', 'recovering', '9', 'admission state is being rebuilt after a Redis restart, retry shortly\n'],
    ['R.redis_unavailable(h)', 'redis_unavailable', '1', 'admission control unavailable, retry later\n'],
  ])('%s: 503 %s, Retry-After %s', (call, reason, retry, body) => {
    expect(respond(call)).toEqual({
      headers: { ':status': '503', 'retry-after': retry, 'content-type': 'text/plain', 'x-ws-admission': reason },
      body,
    });
  });
});
