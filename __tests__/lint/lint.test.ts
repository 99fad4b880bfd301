// The type check, the linters and the formatter, as part of `npm test` (`npm run lint`
// runs the same): each must be clean, and every suppression in the code says why.
import { spawnSync } from 'child_process';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.join(ROOT, 'node_modules', '.bin');

function run(cmd: string, args: string[]): { status: number | null; output: string } {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: 170_000, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

describe('linters', () => {
  it('ESLint with typescript-eslint type-aware rules reports nothing (eslint.config.mjs)', () => {
    const r = run(path.join(BIN, 'eslint'), ['--max-warnings', '0', '.']);
    expect({ status: r.status, output: r.output.trim() }).toEqual({ status: 0, output: '' });
  }, 180_000);

  it('tsc type-checks every TypeScript file (jest only transpiles them)', () => {
    for (const project of ['tsconfig.json', 'tools/tsconfig.json']) {
      const r = run(path.join(BIN, 'tsc'), ['-p', project, '--noEmit', '--incremental', 'false']);
      expect({ project, status: r.status, output: r.output.trim() }).toEqual({ project, status: 0, output: '' });
    }
  }, 180_000);

  it('Prettier finds every TypeScript file formatted (.prettierrc.json)', () => {
    const r = run(path.join(BIN, 'prettier'), ['--check', '--log-level', 'warn', '**/*.ts']);
    expect({ status: r.status, output: r.output.trim() }).toEqual({ status: 0, output: '' });
  }, 180_000);

  it('luacheck reports nothing on every Lua file (.luacheckrc)', () => {
    const r = run('luacheck', ['--no-color', '--quiet', 'lua', '__tests__/filter/harness']);
    expect({ status: r.status, output: r.output.trim() }).toEqual({
      status: 0,
      output: expect.stringMatching(/^Total: 0 warnings \/ 0 errors in \d+ files$/),
    });
  });

  it('every eslint-disable comment gives its reason after " -- "', () => {
    const r = run('git', ['grep', '-n', '-E', '(//|/\\*) *eslint-disable', '--', '*.ts']);
    const comments = r.output.split('\n').filter(Boolean);
    expect(comments.length).toBeGreaterThan(0); // (the search itself works)
    expect(comments.filter((l) => !/eslint-disable(-next-line|-line)? [^ ]+(, [^ ]+)* -- \S/.test(l))).toEqual([]);
  });
});
