import { Testing } from 'cdktf';
import { EnvoyImageRepository, EnvoyImageRepositoryProps } from '../../constructs/ecr';

function synth(props?: EnvoyImageRepositoryProps): { resource: Record<string, Record<string, Record<string, unknown>>> } {
  return JSON.parse(
    Testing.synthScope((scope) => {
      new EnvoyImageRepository(scope, 'envoy-image', props);
    }),
  );
}

describe('EnvoyImageRepository (optional ECR repository for the Envoy image)', () => {
  it('is immutable, scanned on push, encrypted, with a lifecycle rule', () => {
    const r = synth().resource;
    const repo = Object.values(r.aws_ecr_repository)[0];
    expect(repo).toMatchObject({
      name: 'ws-envoy-lua',
      image_tag_mutability: 'IMMUTABLE',
      image_scanning_configuration: { scan_on_push: true },
      encryption_configuration: [{ encryption_type: 'AES256' }],
      force_delete: false,
    });
    const policy = JSON.parse(Object.values(r.aws_ecr_lifecycle_policy)[0].policy as string);
    expect(policy.rules[0].selection).toEqual({ tagStatus: 'any', countType: 'imageCountMoreThan', countNumber: 20 });
  });
  it('refuses a bad name or retention', () => {
    expect(() => synth({ name: 'Envoy' })).toThrow(
      'EnvoyImageRepository: name must be an ECR repository name (lower-case letters, digits, ".", "_", "-", "/"), got "Envoy"',
    );
    expect(() => synth({ keepImages: 0 })).toThrow('EnvoyImageRepository: keepImages must be a positive integer, got 0');
  });
});
