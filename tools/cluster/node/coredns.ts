/**
 * The cluster DNS of the real node: CoreDNS as a pod (Deployment kube-system/coredns, its
 * RBAC, its Corefile) behind the kube-dns Service at the address the kubelet gives every
 * pod. The Corefile answers the cluster's own names only (no `forward`): nothing a pod
 * resolves leaves the cluster.
 */
import { NODE_NETWORK } from './network';

const NS = 'kube-system';
const LABELS = { 'k8s-app': 'kube-dns' };
const DNS_PORT = 1053;

export const COREFILE = [
  `.:${DNS_PORT} {`,
  '    errors',
  '    health :8080',
  '    ready :8181',
  '    kubernetes cluster.local in-addr.arpa ip6.arpa {',
  '        pods insecure',
  '        fallthrough in-addr.arpa ip6.arpa',
  '        ttl 30',
  '    }',
  '    cache 30',
  '}',
  '',
].join('\n');

/** Every object CoreDNS needs, for `kubectl apply -f -` (a List). */
export function corednsManifests(image: string): object {
  const meta = (name: string, namespaced = true) => ({ name, ...(namespaced ? { namespace: NS } : {}), labels: LABELS });
  return {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta('coredns') },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRole',
        metadata: meta('system:coredns', false),
        rules: [
          { apiGroups: [''], resources: ['endpoints', 'services', 'pods', 'namespaces'], verbs: ['list', 'watch'] },
          { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
        ],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRoleBinding',
        metadata: meta('system:coredns', false),
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:coredns' },
        subjects: [{ kind: 'ServiceAccount', name: 'coredns', namespace: NS }],
      },
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('coredns'), data: { Corefile: COREFILE } },
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: meta('coredns'),
        spec: {
          replicas: 1,
          selector: { matchLabels: LABELS },
          template: {
            metadata: { labels: LABELS },
            spec: {
              serviceAccountName: 'coredns',
              dnsPolicy: 'Default',
              securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
              containers: [
                {
                  name: 'coredns',
                  image,
                  args: ['-conf', '/etc/coredns/Corefile'],
                  ports: [
                    { name: 'dns', containerPort: DNS_PORT, protocol: 'UDP' },
                    { name: 'dns-tcp', containerPort: DNS_PORT, protocol: 'TCP' },
                  ],
                  securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
                  readinessProbe: { httpGet: { path: '/ready', port: 8181 }, periodSeconds: 2 },
                  livenessProbe: { httpGet: { path: '/health', port: 8080 }, periodSeconds: 10 },
                  resources: { requests: { cpu: '50m', memory: '32Mi' }, limits: { memory: '128Mi' } },
                  volumeMounts: [{ name: 'config', mountPath: '/etc/coredns', readOnly: true }],
                },
              ],
              volumes: [{ name: 'config', configMap: { name: 'coredns' } }],
            },
          },
        },
      },
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: meta('kube-dns'),
        spec: {
          clusterIP: NODE_NETWORK.dnsIp,
          selector: LABELS,
          ports: [
            { name: 'dns', port: 53, targetPort: DNS_PORT, protocol: 'UDP' },
            { name: 'dns-tcp', port: 53, targetPort: DNS_PORT, protocol: 'TCP' },
          ],
        },
      },
    ],
  };
}
