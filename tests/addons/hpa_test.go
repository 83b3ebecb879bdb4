package addons

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// hpaObjects: the Plumber API in a namespace of the test's own (1 replica,
// 50m CPU requested), a HorizontalPodAutoscaler on 50 % CPU (1 to 3
// replicas), and its Service.
const hpaObjects = `apiVersion: apps/v1
kind: Deployment
metadata: {name: plumber-api, namespace: hpa}
spec:
  replicas: 1
  selector: {matchLabels: {app: plumber-api}}
  template:
    metadata: {labels: {app: plumber-api}}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: plumber-api
        image: docker.io/bramble/plumber-api:1.0.0
        imagePullPolicy: Never
        ports: [{name: http, containerPort: 8000}]
        resources: {requests: {cpu: 50m, memory: 96Mi}, limits: {memory: 384Mi}}
        readinessProbe:
          httpGet: {path: /health, port: http}
          periodSeconds: 3
---
apiVersion: v1
kind: Service
metadata: {name: plumber-api, namespace: hpa}
spec:
  selector: {app: plumber-api}
  ports: [{port: 8000, targetPort: http}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: plumber-api, namespace: hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: plumber-api}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
`

// loadPod requests /parity from the Service in four loops at once.
func loadPod(svcIP string) string {
	return `apiVersion: v1
kind: Pod
metadata: {name: load, namespace: hpa}
spec:
  automountServiceAccountToken: false
  containers:
  - name: load
    image: docker.io/bramble/busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "for i in 1 2 3 4; do (while true; do wget -q -O /dev/null 'http://` + svcIP + `:8000/parity?int=15'; done) & done; wait"]
`
}

// checkHPA: a HorizontalPodAutoscaler on CPU, fed by the in-process
// metrics-server, scales the Plumber API up while a pod of the same
// namespace keeps it busy.
func checkHPA(t *testing.T, s *testutil.Server) {
	s.MustKubectl("create", "namespace", "hpa")
	defer s.Kubectl("delete", "namespace", "hpa", "--wait=false")
	testutil.WaitServiceAccount(t, s, "hpa")
	dir := t.TempDir()
	apply := func(name, doc string) {
		t.Helper()
		f := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		s.MustKubectl("apply", "-f", f)
	}
	apply("plumber", hpaObjects)
	s.MustKubectl("-n", "hpa", "rollout", "status", "deployment/plumber-api", "--timeout=4m")
	// Idle, the HPA reads the pod's CPU and stays at one replica.
	testutil.WaitFor(t, 3*time.Minute, "the HPA reads the pod's CPU", func() bool {
		out, _ := s.Kubectl("-n", "hpa", "get", "hpa", "plumber-api", "-o", "jsonpath={.status.currentMetrics[0].resource.current.averageUtilization}")
		return out != ""
	})
	svcIP := s.MustKubectl("-n", "hpa", "get", "service", "plumber-api", "-o", "jsonpath={.spec.clusterIP}")
	apply("load", loadPod(svcIP))
	testutil.WaitFor(t, 6*time.Minute, "the HPA scales the Plumber API above one replica", func() bool {
		out, _ := s.Kubectl("-n", "hpa", "get", "deployment", "plumber-api", "-o", "jsonpath={.spec.replicas}")
		return out != "" && out != "1"
	})
	t.Logf("under load: %s", strings.Join(strings.Fields(s.MustKubectl("-n", "hpa", "get", "hpa", "plumber-api", "--no-headers")), " "))
}
