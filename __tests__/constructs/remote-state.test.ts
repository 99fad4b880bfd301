// constructs/remote-state.ts (configureRemoteState), in a small test chart: the S3 backend
// when a bucket is given, the local state otherwise.
import { RemoteStateProps, configureRemoteState } from '../../constructs/remote-state';
import { synthStack, testStack } from '../support/synth';

function build(props: Partial<RemoteStateProps>) {
  const stack = testStack();
  const backend = configureRemoteState(stack, { bucket: 'acme-tfstate', key: 'ws/terraform.tfstate', region: 'eu-west-1', ...props });
  return { backend, json: synthStack(stack) };
}

it('uses the S3 backend, encrypted, with the lock file next to the state', () => {
  expect(build({}).json.terraform.backend).toEqual({
    s3: { bucket: 'acme-tfstate', key: 'ws/terraform.tfstate', region: 'eu-west-1', encrypt: true, use_lockfile: true },
  });
});

it('without the lock file when asked', () => {
  expect(build({ lockfile: false }).json.terraform.backend).toEqual({
    s3: { bucket: 'acme-tfstate', key: 'ws/terraform.tfstate', region: 'eu-west-1', encrypt: true },
  });
});

it('keeps the local state without a bucket', () => {
  const { backend, json } = build({ bucket: '' });
  expect(backend).toBeUndefined();
  expect(json.terraform?.backend).toBeUndefined();
});
