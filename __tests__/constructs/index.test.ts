// constructs/index.ts: the package's one import, re-exporting every construct file.
import * as fs from 'fs';
import * as path from 'path';

it('re-exports every construct file', () => {
  const dir = path.resolve(__dirname, '..', '..', 'constructs');
  const index = fs.readFileSync(path.join(dir, 'index.ts'), 'utf8');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && f !== 'index.ts');
  for (const f of files) expect(index).toContain(`export * from './${f.replace(/\.ts$/, '')}';`);
});
