import { App } from 'cdktf';
import { loadConfig } from './config/load';
import { STACK_NAME, WsAdmissionStack } from './constructs/stack';

// Wiring only: configuration is read from defaults < $WS_ADMISSION_CONFIG < WS_ADMISSION_* env.
const app = new App();
new WsAdmissionStack(app, STACK_NAME, { config: loadConfig() });
app.synth();
