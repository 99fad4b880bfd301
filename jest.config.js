/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/__tests__'],
  testMatch: ['**/*.test.ts'],
  // The real-cluster suite (builds a toolchain, starts an API server): `npm run test:cluster`.
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/__tests__/cluster/'],
  // Transpile only (tsconfig.json sets isolatedModules): `npm run build` type-checks.
  transform: { '^.+\\.ts$': ['ts-jest', {}] },
  // `tsc` compiles in place (main.js beside main.ts): resolve the .ts source first so a
  // stale compiled file never shadows the code under test.
  moduleFileExtensions: ['ts', 'js', 'json', 'node'],
  modulePathIgnorePatterns: ['<rootDir>/cdktf.out/'],
  snapshotResolver: undefined,
  testTimeout: 60000,
};
