import { DataAwsCallerIdentity } from '@cdktf/provider-aws/lib/data-aws-caller-identity';
import { DataAwsEksCluster } from '@cdktf/provider-aws/lib/data-aws-eks-cluster';
import { DataAwsIamPolicyDocument } from '@cdktf/provider-aws/lib/data-aws-iam-policy-document';
import { DataAwsPartition } from '@cdktf/provider-aws/lib/data-aws-partition';
import { IamPolicy } from '@cdktf/provider-aws/lib/iam-policy';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicyAttachment } from '@cdktf/provider-aws/lib/iam-role-policy-attachment';
import { Release } from '@cdktf/provider-helm/lib/release';
import { Fn } from 'cdktf';
import { Construct } from 'constructs';

/** The chart pinned (aws/eks-charts, stable/aws-load-balancer-controller: version = appVersion). */
export const LB_CONTROLLER_CHART = {
  repository: 'https://aws.github.io/eks-charts',
  chart: 'aws-load-balancer-controller',
  version: '3.5.0',
} as const;
const NAMESPACE = 'kube-system';
const SERVICE_ACCOUNT = 'aws-load-balancer-controller';

export interface LbControllerProps {
  readonly cluster: DataAwsEksCluster;
  readonly region: string;
  /**
   * The controller's IAM policy, as published for the pinned version
   * (docs/install/iam_policy.json of kubernetes-sigs/aws-load-balancer-controller).
   */
  readonly iamPolicyJson: string;
  /** Name prefix of the IAM role and policy. */
  readonly namePrefix: string;
}

/**
 * The AWS Load Balancer Controller for a cluster that has none: its IAM role for the
 * service account (IRSA: the cluster's OIDC provider must be registered in IAM) with the
 * controller's own policy, and the Helm release in kube-system, pinned.
 */
export class LbController extends Construct {
  public readonly role: IamRole;
  public readonly release: Release;

  constructor(scope: Construct, id: string, props: LbControllerProps) {
    super(scope, id);
    const issuer = Fn.replace(props.cluster.identity.get(0).oidc.get(0).issuer, 'https://', '');
    const account = new DataAwsCallerIdentity(this, 'account', {});
    const partition = new DataAwsPartition(this, 'partition', {});
    // The policy document data source writes the JSON (condition keys that are
    // references included), not a hand-built string.
    const trust = new DataAwsIamPolicyDocument(this, 'trust', {
      statement: [
        {
          effect: 'Allow',
          actions: ['sts:AssumeRoleWithWebIdentity'],
          principals: [
            { type: 'Federated', identifiers: [`arn:${partition.partition}:iam::${account.accountId}:oidc-provider/${issuer}`] },
          ],
          condition: [
            { test: 'StringEquals', variable: `${issuer}:sub`, values: [`system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}`] },
            { test: 'StringEquals', variable: `${issuer}:aud`, values: ['sts.amazonaws.com'] },
          ],
        },
      ],
    });
    this.role = new IamRole(this, 'role', {
      name: `${props.namePrefix}-lb-controller`,
      assumeRolePolicy: trust.json,
    });
    const policy = new IamPolicy(this, 'policy', {
      name: `${props.namePrefix}-lb-controller`,
      policy: props.iamPolicyJson,
    });
    new IamRolePolicyAttachment(this, 'attach', { role: this.role.name, policyArn: policy.arn });
    this.release = new Release(this, 'release', {
      name: 'aws-load-balancer-controller',
      namespace: NAMESPACE,
      ...LB_CONTROLLER_CHART,
      values: [
        JSON.stringify({
          clusterName: props.cluster.name,
          region: props.region,
          vpcId: props.cluster.vpcConfig.get(0).vpcId,
          serviceAccount: { create: true, name: SERVICE_ACCOUNT, annotations: { 'eks.amazonaws.com/role-arn': this.role.arn } },
        }),
      ],
      wait: true,
      dependsOn: [policy],
    });
  }
}
