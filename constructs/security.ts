/**
 * The "restricted" Pod Security Standard, applied to every pod of the stack:
 * non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
 * read-only root filesystem (writable paths are explicit emptyDirs).
 * @see https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
 */
export function podSecurityContext(uid: number) {
  return {
    runAsNonRoot: true,
    runAsUser: String(uid),
    runAsGroup: String(uid),
    // fsGroup makes mounted Secret files group-readable by the pod's user
    // (the kubelet adds 0440 to a read-only volume it chowns to fsGroup).
    fsGroup: String(uid),
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

export function containerSecurityContext() {
  return {
    runAsNonRoot: true,
    allowPrivilegeEscalation: false,
    privileged: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

/** CPU/memory requests and limits of one container. */
export interface ResourceSpec {
  readonly cpuRequest: string;
  readonly memoryRequest: string;
  readonly cpuLimit: string;
  readonly memoryLimit: string;
}

export function resources(r: ResourceSpec) {
  return {
    requests: { cpu: r.cpuRequest, memory: r.memoryRequest },
    limits: { cpu: r.cpuLimit, memory: r.memoryLimit },
  };
}
