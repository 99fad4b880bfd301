import * as path from 'path';
import { App } from 'cdktf';
import { loadConfig } from './config/load';
import { ConfigError } from './config/validate';
import { STACK_NAME, WsAdmissionStack } from './constructs/stack';

// Wiring only: configuration is read from defaults < $WS_ADMISSION_CONFIG < WS_ADMISSION_* env.
try {
  const app = new App();
  new WsAdmissionStack(app, STACK_NAME, { config: loadConfig() });
  app.synth();
  const written = path.join(app.outdir, 'stacks', STACK_NAME, 'cdk.tf.json');
  process.stdout.write(
    `synth: wrote ${path.relative(process.cwd(), written) || written} (plain Terraform JSON: terraform or tofu can plan it there)\n`,
  );
} catch (e) {
  // A refused configuration is the user's to fix: print the problems, not a stack trace.
  if (!(e instanceof ConfigError)) throw e;
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
}
