package server

import "path/filepath"

// auditPolicy is bramble's default audit policy (--audit-log): who did what
// to which object, never a request or response body, and nothing for the
// chatty read-only traffic that would fill an SD card.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
# Written by bramble at every start; use your own with
# --kube-apiserver-arg audit-policy-file=/path/to/policy.yaml
omitStages:
  - RequestReceived
rules:
  # Health checks, discovery and metrics.
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version", "/metrics", "/openapi/*", "/api", "/api/*", "/apis", "/apis/*"]
  # Events and leases: written constantly by the components themselves.
  - level: None
    resources:
      - group: ""
        resources: ["events"]
      - group: "events.k8s.io"
        resources: ["events"]
      - group: "coordination.k8s.io"
        resources: ["leases"]
  # Reads by the control plane (its controllers run as kube-system service
  # accounts), kube-proxy, flannel, CoreDNS and the nodes.
  - level: None
    verbs: ["get", "list", "watch"]
    users: ["system:kube-scheduler", "system:kube-controller-manager", "system:kube-proxy", "system:apiserver"]
  - level: None
    verbs: ["get", "list", "watch"]
    userGroups: ["system:nodes", "system:serviceaccounts:kube-system", "bramble:flannel"]
  # Secrets, ConfigMaps and token reviews carry credentials: metadata only,
  # even if a rule above is changed to log bodies.
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps", "serviceaccounts/token"]
      - group: "authentication.k8s.io"
        resources: ["tokenreviews"]
  # Everything else: who, what, when, the response code.
  - level: Metadata
`

func auditPolicyPath(p Paths) string { return filepath.Join(p.Root(), "etc", "audit-policy.yaml") }

// auditArgs turn on the audit log: bramble's policy, and rotation sized for
// an SD card (10 MB per file, 3 compressed old files, 7 days).
func auditArgs(path string, p Paths) []string {
	return []string{
		"--audit-log-path=" + path,
		"--audit-policy-file=" + auditPolicyPath(p),
		"--audit-log-maxsize=10",
		"--audit-log-maxbackup=3",
		"--audit-log-maxage=7",
		"--audit-log-compress=true",
	}
}
