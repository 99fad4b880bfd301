import { EcrLifecyclePolicy } from '@cdktf/provider-aws/lib/ecr-lifecycle-policy';
import { EcrRepository } from '@cdktf/provider-aws/lib/ecr-repository';
import { Construct } from 'constructs';

export interface EnvoyImageRepositoryProps {
  /**
   * Repository name (the part after `.amazonaws.com/` in the image reference).
   * @default 'ws-envoy-lua'
   */
  readonly name?: string;
  /**
   * Keep only this many images; older ones are expired by a lifecycle rule.
   * @default 20
   */
  readonly keepImages?: number;
  /**
   * Let `terraform destroy` delete the repository with its images.
   * @default false - destroy fails while images remain, so a running cluster never loses its image
   */
  readonly forceDelete?: boolean;
}

/**
 * An ECR repository for the custom Envoy image (`envoy/Dockerfile`, pushed with
 * `npm run image:push`): immutable tags (a tag is a build; `1.40.0-1` can never change
 * under running pods), scan on push, AES256 at rest, and a lifecycle rule.
 *
 * Optional and off by default: most teams keep images in a shared registry account,
 * and the push must happen before the Deployment can pull it, so the usual order is
 * `image:push --create-repository` first.
 * @see https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-tag-mutability.html
 */
export class EnvoyImageRepository extends Construct {
  public readonly name: string;
  public readonly repository: EcrRepository;
  /** `ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME` (a token until apply). */
  public readonly repositoryUrl: string;

  constructor(scope: Construct, id: string, props: EnvoyImageRepositoryProps = {}) {
    super(scope, id);
    this.name = props.name ?? 'ws-envoy-lua';
    const keep = props.keepImages ?? 20;
    if (!/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(this.name) || this.name.length > 256) {
      throw new Error(
        `EnvoyImageRepository: name must be an ECR repository name (lower-case letters, digits, ".", "_", "-", "/"), got ${JSON.stringify(this.name)}`,
      );
    }
    if (!Number.isInteger(keep) || keep < 1) {
      throw new Error(`EnvoyImageRepository: keepImages must be a positive integer, got ${keep}`);
    }
    this.repository = new EcrRepository(this, 'repository', {
      name: this.name,
      imageTagMutability: 'IMMUTABLE',
      imageScanningConfiguration: { scanOnPush: true },
      encryptionConfiguration: [{ encryptionType: 'AES256' }],
      forceDelete: props.forceDelete ?? false,
    });
    new EcrLifecyclePolicy(this, 'lifecycle', {
      repository: this.repository.name,
      policy: JSON.stringify({
        rules: [
          {
            rulePriority: 1,
            description: `keep the ${keep} most recent images`,
            selection: { tagStatus: 'any', countType: 'imageCountMoreThan', countNumber: keep },
            action: { type: 'expire' },
          },
        ],
      }),
    });
    this.repositoryUrl = this.repository.repositoryUrl;
  }
}
