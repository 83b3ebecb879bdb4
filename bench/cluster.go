package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/pkg/procmaps"
	"github.com/bramble-pi/bramble/tests/cluster"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// clusterScenario: a server and two agents in network namespaces on this
// machine (tests/cluster). Seconds from `bramble agent` start to its node
// Ready: a first join that imports the air-gap images, a first join with
// only the small test image, and a restart of a joined agent; then, after
// idle, the memory of an agent (bramble + containerd) and its CPU while idle;
// last, an image imported on the server until it runs on both agents.
func clusterScenario(bin string, idle time.Duration) error {
	root := filepath.Dir(filepath.Dir(bin))
	airgap := filepath.Join(root, "dist", "bramble-airgap-images-"+runtime.GOARCH+".tar.zst")
	busybox := filepath.Join(root, "dist", "images", runtime.GOARCH, "busybox.tar")
	for _, f := range []string{airgap, busybox} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("image archive (make airgap test-images): %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "bramble-bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := cluster.New(cluster.Config{
		Name: "brbench", StateDir: filepath.Join(dir, "state"), Binary: bin, BinaryPerNode: true,
		Killall: filepath.Join(root, "scripts", "bramble-killall.sh"), Images: []string{airgap, busybox},
	})
	if err != nil {
		return err
	}
	if err := c.Down(); err != nil { // a bench cluster left by a crashed run
		return err
	}
	defer func() {
		if err := c.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "bench cluster down: %v\n", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	server, err := c.AddNode(cluster.NodeOptions{Host: "pi1", Index: 1, Role: cluster.RoleServer})
	if err != nil {
		return err
	}
	if _, err := c.StartServer(server); err != nil {
		return err
	}
	if err := c.WaitAPI(ctx); err != nil {
		return err
	}
	if err := c.WaitReady(ctx, true, server); err != nil {
		return err
	}
	fmt.Printf("server node Ready after start:          %6.2f s\n", time.Since(server.Started).Seconds())
	token, err := c.Token()
	if err != nil {
		return err
	}

	// One agent at a time: the machine's cores are not shared by the joins.
	agent, err := c.AddNode(cluster.NodeOptions{Host: "pi2", Index: 2, Role: cluster.RoleAgent})
	if err != nil {
		return err
	}
	if err := timeAgent(ctx, c, agent, token, "agent Ready after first join (air-gap):"); err != nil {
		return err
	}
	small, err := c.AddNode(cluster.NodeOptions{Host: "pi3", Index: 3, Role: cluster.RoleAgent, Images: []string{busybox}})
	if err != nil {
		return err
	}
	if err := timeAgent(ctx, c, small, token, "agent Ready after first join (busybox):"); err != nil {
		return err
	}
	if _, err := c.Stop(agent, 30*time.Second); err != nil {
		return err
	}
	if err := timeAgent(ctx, c, agent, token, "agent Ready after restart:"); err != nil {
		return err
	}

	fmt.Printf("idling %s ...\n", idle)
	pids := []int{agent.Process.PID}
	// testutil.ContainerdPID knows containerd both built into bramble and as its own
	// executable under the data dir.
	if p := testutil.ContainerdPID(agent.DataDir()); p > 0 {
		pids = append(pids, p)
	} else if p := agent.ContainerdPID(); p > 0 {
		pids = append(pids, p)
	}
	cpu0 := ticks(pids)
	time.Sleep(idle)
	cpu1 := ticks(pids)
	var rss, pss, anon int
	names := []string{"bramble", "containerd"}
	for i, pid := range pids {
		r := smapsRollup(pid)
		rss, pss, anon = rss+r["Rss"], pss+r["Pss"], anon+r["Anonymous"]
		fmt.Printf("agent idle %-11s                  RSS %d MiB (anonymous %d MiB, file %d MiB)\n", names[i]+":", r["Rss"]/1024, r["Anonymous"]/1024, (r["Rss"]-r["Anonymous"])/1024)
	}
	fmt.Printf("  bramble's resident pages by mapping: %s\n", residentByMapping(pids[0]))
	after := ""
	if idle != 3*time.Minute {
		after = fmt.Sprintf(" (after %s)", idle)
	}
	load := record("agent-rss", fmt.Sprintf("%d MiB%s", rss/1024, after))
	fmt.Printf("agent idle memory bramble+containerd:   RSS %d MiB, PSS %d MiB, anonymous %d MiB, load %s\n", rss/1024, pss/1024, anon/1024, load)
	if len(pids) < 2 {
		fmt.Println("  (no containerd process found: bramble alone)")
	}
	if u, err := residentUnionKiB(pids); err == nil {
		fmt.Printf("agent idle resident, shared pages once:  %d MiB\n", u/1024)
	}
	fmt.Printf("agent idle CPU over %s:                 %5.1f %% of one core\n", idle, float64(cpu1-cpu0)/idle.Seconds())
	return imagePull(ctx, c, bin, server, agent, small)
}

// imagePull: seconds from `bramble images import` of the Plumber image
// under a new name on the server to a pod of it running on each agent,
// pulled through the server's registry. withLayers imported the air-gap
// archive (it holds the Plumber layers and fetches only the manifest and
// config); bare did not (it fetches every layer, unless a bundled Plumber
// replica ran there before: printed).
func imagePull(ctx context.Context, c *cluster.Cluster, bin string, server, withLayers, bare *cluster.Node) error {
	const name = "docker.io/bramble/plumber-pulled:bench"
	src := filepath.Join(filepath.Dir(filepath.Dir(bin)), "dist", "images", runtime.GOARCH, "plumber-api.tar")
	archive := filepath.Join(server.Dir, "plumber-pulled.tar")
	if err := cluster.RetagArchive(src, archive, name, nil); err != nil {
		return fmt.Errorf("re-tag the Plumber image (make images): %w", err)
	}
	cs, err := c.Client()
	if err != nil {
		return err
	}
	// The bundled Plumber image shares every layer with the new name.
	had, err := hasImage(ctx, cs, "docker.io/bramble/plumber-api:1.0.0")
	if err != nil {
		return err
	}
	begin := time.Now()
	if out, err := c.InNode(server, bin, "images", "import", "--data-dir", server.DataDir(), archive).CombinedOutput(); err != nil {
		return fmt.Errorf("bramble images import: %w\n%s", err, out)
	}
	fmt.Printf("bramble images import (Plumber, %d MiB): %6.2f s\n", fileMiB(archive), time.Since(begin).Seconds())
	manifest := `apiVersion: apps/v1
kind: Deployment
metadata: {name: plumber-pulled, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: plumber-pulled}}
  template:
    metadata: {labels: {app: plumber-pulled}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: kubernetes.io/hostname, operator: In, values: [` + withLayers.NodeName + `, ` + bare.NodeName + `]}
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {app: plumber-pulled}}
      containers:
      - name: api
        image: ` + name + `
        imagePullPolicy: IfNotPresent
`
	apply := c.KubectlCmd(ctx, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(manifest)
	if out, err := apply.CombinedOutput(); err != nil {
		return fmt.Errorf("apply: %w\n%s", err, out)
	}
	running := map[string]time.Duration{}
	for len(running) < 2 {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=plumber-pulled"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if _, ok := running[p.Spec.NodeName]; !ok && p.Status.Phase == corev1.PodRunning {
				running[p.Spec.NodeName] = time.Since(begin)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Plumber pods not running on both agents: %v", running)
		case <-time.After(200 * time.Millisecond):
		}
	}
	for _, n := range []*cluster.Node{withLayers, bare} {
		fmt.Printf("import to pod running on %s (had the layers: %-5v) %6.2f s\n", n.NodeName, had[n.NodeName], running[n.NodeName].Seconds())
	}
	return nil
}

// hasImage says, by node, whether its kubelet reports the image.
func hasImage(ctx context.Context, cs *kubernetes.Clientset, image string) (map[string]bool, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	has := map[string]bool{}
	for _, n := range nodes.Items {
		for _, img := range n.Status.Images {
			has[n.Name] = has[n.Name] || slices.Contains(img.Names, image)
		}
	}
	return has, nil
}

func fileMiB(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size() >> 20
}

// timeAgent starts bramble agent on n and prints the seconds to its node Ready.
func timeAgent(ctx context.Context, c *cluster.Cluster, n *cluster.Node, token, label string) error {
	if _, err := c.StartAgent(n, token); err != nil {
		return err
	}
	if err := c.WaitReadySince(ctx, n.Started, n); err != nil {
		return err
	}
	fmt.Printf("%-40s %6.2f s\n", label, time.Since(n.Started).Seconds())
	return nil
}

// residentUnionKiB is the memory the processes keep resident, each physical
// page counted once: bramble and its containerd child map the same binary,
// so the sum of their RSS counts its pages twice. It reads the page frames
// from /proc/PID/pagemap (needs root).
func residentUnionKiB(pids []int) (int, error) {
	frames := map[uint64]struct{}{}
	for _, pid := range pids {
		maps, err := procmaps.Read(pid)
		if err != nil {
			return 0, err
		}
		pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
		if err != nil {
			return 0, err
		}
		for _, m := range maps {
			if m.Perms[0] != 'r' || m.Path == "[vsyscall]" {
				continue
			}
			for _, e := range pageEntries(pm, m) {
				if e&(1<<63) != 0 { // present
					if pfn := e & (1<<55 - 1); pfn != 0 {
						frames[pfn] = struct{}{}
					}
				}
			}
		}
		pm.Close()
	}
	return len(frames) * 4, nil
}
