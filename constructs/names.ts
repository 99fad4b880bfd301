/**
 * The Kubernetes names and labels of the stack's objects. They live in config/names.ts,
 * beside the configuration that refuses to clash with them (config/validate.ts must not
 * import from constructs/, which imports config/); the constructs take them from here.
 */
export * from '../config/names';
