/**
 * `npm run test:cluster`: the stack against the real providers and a local API server
 * (__tests__/cluster/). Not part of `npm test`: it needs the built toolchain
 * (tools/cluster/install-toolchain) and takes minutes.
 * @type {import('jest').Config}
 */
const base = require('./jest.config');

module.exports = {
  ...base,
  roots: ['<rootDir>/__tests__/cluster'],
  testPathIgnorePatterns: ['/node_modules/'],
  testTimeout: 10 * 60000,
};
