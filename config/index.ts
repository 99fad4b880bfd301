export * from './schema';
export * from './validate';
export * from './load';
export * from './lua';
export * from './settings';
export * from './docs';
