import { S3Backend, TerraformStack } from 'cdktf';

export interface RemoteStateProps {
  /** S3 bucket; empty = keep the local backend (terraform.<stack>.tfstate). */
  readonly bucket: string;
  /** Object key of the state. */
  readonly key: string;
  /** Region of the bucket. */
  readonly region: string;
  /**
   * Lock with a `.tflock` object next to the state (`use_lockfile`, Terraform >= 1.10),
   * no DynamoDB table needed.
   * @default true
   */
  readonly lockfile?: boolean;
}

/**
 * Configures the S3 backend when a bucket is given. The bucket is not created here (the
 * state cannot live in a bucket the same state creates); README.md, "Remote state",
 * shows how to bootstrap it.
 * @see https://developer.hashicorp.com/terraform/language/backend/s3
 */
export function configureRemoteState(stack: TerraformStack, props: RemoteStateProps): S3Backend | undefined {
  if (props.bucket === '') return undefined;
  const backend = new S3Backend(stack, {
    bucket: props.bucket,
    key: props.key,
    region: props.region,
    encrypt: true,
  });
  // cdktf 0.21's S3BackendConfig has no field for it yet; the backend block takes it as is.
  if (props.lockfile ?? true) backend.addOverride('use_lockfile', true);
  return backend;
}
