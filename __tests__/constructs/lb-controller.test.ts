// constructs/lb-controller.ts (LbController): the AWS Load Balancer Controller's Helm release and
// its IAM role (IRSA), with installLbController.
import * as fs from 'fs';
import * as path from 'path';
import { FIXTURES, Json, byName, synth } from '../support/synth';

describe('installLbController: the AWS Load Balancer Controller with its IAM role', () => {
  const policyFile = path.join(FIXTURES, 'iam', 'lb-controller-policy.json');
  const { json } = synth({ installLbController: true, lbControllerIamPolicyFile: policyFile });

  it('installs the pinned chart in kube-system with the cluster, region, VPC and the role on its service account', () => {
    const release = Object.values(json.resource.helm_release)[0] as Json;
    expect(release).toMatchObject({
      name: 'aws-load-balancer-controller',
      namespace: 'kube-system',
      repository: 'https://aws.github.io/eks-charts',
      chart: 'aws-load-balancer-controller',
      version: '3.5.0',
      wait: true,
    });
    const values = JSON.parse(release.values[0]);
    expect(values).toEqual({
      clusterName: expect.stringMatching(/^\$\{data\.aws_eks_cluster\.[^.]+\.name\}$/),
      region: 'us-east-1',
      vpcId: expect.stringMatching(/^\$\{data\.aws_eks_cluster\.[^.]+\.vpc_config\[0\]\.vpc_id\}$/),
      serviceAccount: {
        create: true,
        name: 'aws-load-balancer-controller',
        annotations: { 'eks.amazonaws.com/role-arn': expect.stringMatching(/^\$\{aws_iam_role\.[^.]+\.arn\}$/) },
      },
    });
  });

  it("trusts only the controller's service account through the cluster's OIDC provider, with the policy from the file", () => {
    const role = Object.values(json.resource.aws_iam_role)[0] as Json;
    expect(role.assume_role_policy).toMatch(/^\$\{data\.aws_iam_policy_document\.[^.]+\.json\}$/);
    const trust = Object.values(json.data.aws_iam_policy_document)[0] as Json;
    const issuer = '${replace(data.aws_eks_cluster.eks_cluster_55B0C966.identity[0].oidc[0].issuer, "https://", "")}';
    expect(trust.statement).toEqual([
      {
        effect: 'Allow',
        actions: ['sts:AssumeRoleWithWebIdentity'],
        principals: [
          {
            type: 'Federated',
            identifiers: [
              expect.stringMatching(
                /^arn:\$\{data\.aws_partition\.[^}]+\}:iam::\$\{data\.aws_caller_identity\.[^}]+\}:oidc-provider\/\$\{replace\(/,
              ),
            ],
          },
        ],
        condition: [
          { test: 'StringEquals', variable: `${issuer}:sub`, values: ['system:serviceaccount:kube-system:aws-load-balancer-controller'] },
          { test: 'StringEquals', variable: `${issuer}:aud`, values: ['sts.amazonaws.com'] },
        ],
      },
    ]);
    const policy = Object.values(json.resource.aws_iam_policy)[0] as Json;
    expect(JSON.parse(policy.policy)).toEqual(JSON.parse(fs.readFileSync(policyFile, 'utf8')));
    expect(Object.keys(json.resource.aws_iam_role_policy_attachment)).toHaveLength(1);
  });

  it('creates the NLB Service and the Envoy pods after the controller (its webhooks act on them)', () => {
    const release = Object.keys(json.resource.helm_release)[0];
    expect(byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb').depends_on).toContain(`helm_release.${release}`);
    expect(byName(json, 'kubernetes_deployment_v1', 'ws-envoy').depends_on).toContain(`helm_release.${release}`);
    // Off by default: no release, no IAM.
    const off = synth().json;
    expect(off.resource.helm_release).toBeUndefined();
    expect(off.resource.aws_iam_role).toBeUndefined();
  });

  it('refuses a policy file that cannot be read or is not an IAM policy, naming the file and the fix', () => {
    expect(() => synth({ installLbController: true, lbControllerIamPolicyFile: '/nonexistent/policy.json' })).toThrow(
      'lbControllerIamPolicyFile "/nonexistent/policy.json" cannot be read',
    );
    const notPolicy = path.join(FIXTURES, 'config', 'good.json');
    expect(() => synth({ installLbController: true, lbControllerIamPolicyFile: notPolicy })).toThrow(
      'is not an IAM policy (Version "2012-10-17" and a list of Statement)',
    );
  });
});
