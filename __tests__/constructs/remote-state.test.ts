// constructs/remote-state.ts: the S3 backend, when remoteStateBucket is set.
import { EVERYTHING_CHANGED, synth } from '../support/synth';

describe('GIVEN every option changed (EVERYTHING_CHANGED)', () => {
  const { json } = synth(EVERYTHING_CHANGED);

  it('uses the S3 backend without the lock file when asked', () => {
    expect(json.terraform.backend).toEqual({
      s3: { bucket: 'acme-tfstate', key: 'realtime/ws.tfstate', region: 'eu-central-1', encrypt: true },
    });
    expect(json.output.state_backend.value).toBe('s3://acme-tfstate/realtime/ws.tfstate');
  });
});

describe('remote state', () => {
  it('uses the S3 backend with use_lockfile, in the cluster region by default', () => {
    const { json } = synth({ remoteStateBucket: 'acme-tfstate' });
    expect(json.terraform.backend).toEqual({
      s3: { bucket: 'acme-tfstate', key: 'ws-envoy-admission/terraform.tfstate', region: 'us-east-1', encrypt: true, use_lockfile: true },
    });
  });
});
