/**
 * One bench part run on its own (`node bench/<part>.js`, after `npm run prebench`):
 * prints its result as JSON (or as `show` renders it), and exits 1 with the error.
 */
export function runAlone<T>(mod: NodeModule, run: () => Promise<T>, show: (r: T) => string = (r) => JSON.stringify(r, null, 2)): void {
  if (require.main !== mod) return;
  run().then(
    (r) => process.stdout.write(`${show(r)}\n`),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
