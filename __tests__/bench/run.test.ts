// `npm run bench -- <part> ...` runs the parts named; none named runs them all.
import { partsToRun } from '../../bench/run';

describe('partsToRun', () => {
  it('runs every part when none is named', () => {
    expect(partsToRun([])).toEqual(expect.arrayContaining(['synth', 'memory', 'throughput']));
    expect(partsToRun([])[0]).toBe('synth');
  });

  it('runs the parts named, in the order of the full run', () => {
    expect(partsToRun(['memory'])).toStrictEqual(['memory']);
    expect(partsToRun(['throughput', 'synth'])).toStrictEqual(['synth', 'throughput']);
  });

  it('refuses a part that does not exist, listing those that do', () => {
    expect(() => partsToRun(['memroy'])).toThrow(/^unknown bench part memroy; the parts are: synth .* memory .*throughput/);
  });

  it('refuses an option', () => {
    expect(() => partsToRun(['--fast'])).toThrow(/Unknown option '--fast'/);
  });
});
