// constructs/lb-controller.ts (LbController), built in a small test chart with the EKS
// cluster lookup it needs: the AWS Load Balancer Controller's Helm release and its IAM role
// (IRSA). (installLbController in the stack: the policy file, the ordering of the NLB and
// the Envoy pods after the release: constructs/stack.test.ts.)
import * as fs from 'fs';
import * as path from 'path';
import { EksProviders } from '../../constructs/eks-providers';
import { LB_CONTROLLER_CHART, LbController } from '../../constructs/lb-controller';
import { FIXTURES, Json, only, synthStack, testStack } from '../support/synth';

const POLICY = JSON.stringify(JSON.parse(fs.readFileSync(path.join(FIXTURES, 'iam', 'lb-controller-policy.json'), 'utf8')));

describe('GIVEN the EKS cluster and the policy', () => {
  const stack = testStack();
  const eks = new EksProviders(stack, 'eks', { clusterName: 'ws-eks', region: 'us-east-1', helm: true });
  const controller = new LbController(stack, 'lb-controller', {
    cluster: eks.cluster,
    region: 'us-east-1',
    iamPolicyJson: POLICY,
    namePrefix: 'ws-eks-ws',
  });
  const json = synthStack(stack);

  it('installs the pinned chart in kube-system with the cluster, region, VPC and the role on its service account; waits for it', () => {
    const release = only(json, 'helm_release');
    expect(release).toMatchObject({ name: 'aws-load-balancer-controller', namespace: 'kube-system', ...LB_CONTROLLER_CHART, wait: true });
    expect(LB_CONTROLLER_CHART).toEqual({
      repository: 'https://aws.github.io/eks-charts',
      chart: 'aws-load-balancer-controller',
      version: '3.5.0',
    });
    expect(JSON.parse(release.values[0])).toEqual({
      clusterName: expect.stringMatching(/^\$\{data\.aws_eks_cluster\.[^.]+\.name\}$/),
      region: 'us-east-1',
      vpcId: expect.stringMatching(/^\$\{data\.aws_eks_cluster\.[^.]+\.vpc_config\[0\]\.vpc_id\}$/),
      serviceAccount: {
        create: true,
        name: 'aws-load-balancer-controller',
        annotations: { 'eks.amazonaws.com/role-arn': expect.stringMatching(/^\$\{aws_iam_role\.[^.]+\.arn\}$/) },
      },
    });
    // After its policy is in place.
    expect(release.depends_on).toEqual([expect.stringMatching(/^aws_iam_policy\./)]);
  });

  it("trusts only the controller's service account through the cluster's OIDC provider, with the given policy", () => {
    const role = only(json, 'aws_iam_role');
    expect(role.name).toBe('ws-eks-ws-lb-controller');
    expect(role.assume_role_policy).toMatch(/^\$\{data\.aws_iam_policy_document\.[^.]+\.json\}$/);
    const trust = Object.values(json.data.aws_iam_policy_document)[0] as Json;
    const issuer = trust.statement[0].condition[0].variable.replace(/:sub$/, '');
    expect(issuer).toMatch(/^\$\{replace\(data\.aws_eks_cluster\.[^.]+\.identity\[0\]\.oidc\[0\]\.issuer, "https:\/\/", ""\)\}$/);
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
    const policy = only(json, 'aws_iam_policy');
    expect(policy.name).toBe('ws-eks-ws-lb-controller');
    expect(JSON.parse(policy.policy)).toEqual(JSON.parse(POLICY));
    expect(only(json, 'aws_iam_role_policy_attachment')).toMatchObject({ role: expect.stringMatching(/^\$\{aws_iam_role\./) });
    expect(controller.role).toBeDefined();
  });
});
