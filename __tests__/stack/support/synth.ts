// The stack fixtures moved to __tests__/support/synth.ts; this path stays for the suite
// that still imports it (__tests__/e2e/validate.test.ts).
export * from '../../support/synth';
