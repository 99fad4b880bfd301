// ESLint with typescript-eslint's type-aware rules over every TypeScript file:
// `npm run lint`, part of `npm test` (__tests__/lint). Formatting is Prettier's (`npm run format`).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'cdktf.out/**', '.gen/**', '.e2e/**', '.envoy/**', 'bench-results/**', '**/*.js', '**/*.mjs', '**/*.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // tsc already reports unused locals and parameters (tsconfig: noUnusedLocals,
      // noUnusedParameters), with `_` for the deliberate ones.
      '@typescript-eslint/no-unused-vars': 'off',
      // An async function without an await still returns a promise, which is what the
      // interfaces here ask for (prerequisite checks, waitFor predicates, test doubles).
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // Tests and benchmarks read documents that are untyped by nature (synthesized Terraform
    // JSON, Envoy YAML, kubectl output) through `any`: a wrong path there fails the
    // assertion or the run, which is the check those rules would otherwise give.
    files: ['__tests__/**', 'bench/**'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
);
