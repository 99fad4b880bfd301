// config/docs.ts: the README's configuration table, generated from the field table
// (`npm run docs:config`).
import * as fs from 'fs';
import { FIELDS, envName } from '../../config/schema';
import { README_PATH, TABLE_END, TABLE_START, renderConfigTable, withConfigTable } from '../../config/docs';

describe('README configuration table', () => {
  const readme = fs.readFileSync(README_PATH, 'utf8');

  it('is in step with config/schema.ts (run `npm run docs:config` to rewrite it)', () => {
    expect(withConfigTable(readme)).toBe(readme);
  });

  it('lists every setting with its environment variable', () => {
    const table = renderConfigTable();
    for (const f of FIELDS) expect(table).toContain(`| \`${f.key}\` | \`${envName(f.key)}\` |`);
    expect(table.split('\n')).toHaveLength(FIELDS.length + 2);
  });

  it('escapes a "|" inside a cell exactly once and writes no empty code span', () => {
    const table = renderConfigTable();
    const row = (key: string) => table.split('\n').find((l) => l.startsWith(`| \`${key}\` |`)) ?? '';
    expect(row('redisFailureMode')).toContain('| `open` \\| `closed` |');
    expect(table).not.toContain('\\\\|');
    // Every row splits into exactly the five columns of the header.
    for (const line of table.split('\n')) expect(line.split(/(?<!\\)\|/).length).toBe(7);
    expect(row('serviceMonitorLabels')).toContain('| (none) |');
    expect(table).not.toContain('``');
  });

  it('refuses a README without the markers', () => {
    expect(() => withConfigTable('# no table here\n')).toThrow(
      `README.md must contain ${TABLE_START} followed by ${TABLE_END}; add both markers where the table belongs`,
    );
  });
});
