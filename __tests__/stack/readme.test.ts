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

  it('refuses a README without the markers', () => {
    expect(() => withConfigTable('# no table here\n')).toThrow(
      `README.md must contain ${TABLE_START} followed by ${TABLE_END}; add both markers where the table belongs`,
    );
  });
});
