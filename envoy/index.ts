export * from './types';
export * from './bootstrap';
export * from './yaml';
