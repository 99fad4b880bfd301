// The stack fixtures moved to __tests__/support/synth.ts; this path stays for the suites
// that still import it (__tests__/e2e/validate.test.ts, __tests__/cluster/).
export * from '../../support/synth';
