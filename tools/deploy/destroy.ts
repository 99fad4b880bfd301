/** `npm run destroy`: see tools/deploy/deploy.ts. */
import { main } from './deploy';

void main(process.argv.slice(2), 'destroy').then((code) => process.exit(code));
