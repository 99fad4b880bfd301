// constructs/names.ts: the constructs take the stack's names and labels from config/names.ts
// (tested in __tests__/config/names.test.ts), the very objects the config's clash checks use.
import * as configNames from '../../config/names';
import * as constructNames from '../../constructs/names';

it('re-exports config/names.ts, the same objects', () => {
  expect(Object.keys(constructNames).sort()).toStrictEqual(Object.keys(configNames).sort());
  for (const [key, value] of Object.entries(configNames)) expect(constructNames[key as keyof typeof constructNames]).toBe(value);
});
