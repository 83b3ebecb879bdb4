package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// addons: seconds from `bramble server` start (README's path: the air-gap
// tarball `make` put in dist/, found by bramble itself) to the first "odd"
// through the ingress; then, after idle, RSS of bramble,
// containerd, the shims and every pod's processes.
func addons(bin string, idle time.Duration) error {
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(bin)), "dist", "bramble-airgap-images-"+runtime.GOARCH+".tar.zst")); err != nil {
		return fmt.Errorf("run make first (it builds the air-gap tarball): %w", err)
	}
	n, err := startNode(bin, true)
	if err != nil {
		return err
	}
	defer n.stop()
	p, data := n.p, n.data
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	top := firstNodeMetrics(ctx, n.kubeconfig, begin)
	client := &http.Client{Timeout: 2 * time.Second}
	if err := poll(ctx, func() bool {
		resp, err := client.Get("http://127.0.0.1/parity?int=15")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.TrimSpace(string(b)) == "odd"
	}); err != nil {
		return fmt.Errorf("no odd through the ingress: %w", err)
	}
	fmt.Printf("first odd through Traefik:   %6.2f s after start (README path, fresh data dir, load %s)\n", time.Since(begin).Seconds(), loadavg())

	// The goal's bundle has 3 Plumber replicas: the manifest's default.
	cs, err := waitClient(ctx, n.kubeconfig)
	if err != nil {
		return err
	}
	var replicas int32
	if err := poll(ctx, func() bool {
		d, err := cs.AppsV1().Deployments("plumber").Get(ctx, "plumber-api", metav1.GetOptions{})
		if err != nil {
			return false
		}
		replicas = *d.Spec.Replicas
		return replicas >= 3 && d.Status.ReadyReplicas == replicas
	}); err != nil {
		return fmt.Errorf("3 Plumber replicas ready: %w", err)
	}
	fmt.Printf("%d Plumber replicas ready:     %6.2f s after start\n", replicas, time.Since(begin).Seconds())
	if plumberReplicas != replicas {
		// A Pi 3 profile: fewer replicas, as the README says to run them.
		scale, err := cs.AppsV1().Deployments("plumber").GetScale(ctx, "plumber-api", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("plumber-api scale: %w", err)
		}
		scale.Spec.Replicas = plumberReplicas
		if _, err := cs.AppsV1().Deployments("plumber").UpdateScale(ctx, "plumber-api", scale, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("scale plumber-api to %d: %w", plumberReplicas, err)
		}
		if err := poll(ctx, func() bool {
			pods, err := cs.CoreV1().Pods("plumber").List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == int(plumberReplicas)
		}); err != nil {
			return fmt.Errorf("plumber-api down to %d pods: %w", plumberReplicas, err)
		}
		replicas = plumberReplicas
		fmt.Printf("scaled plumber-api to %d replicas\n", replicas)
	}
	if took := <-top; took > 0 {
		fmt.Printf("first kubectl top nodes:     %6.2f s after start (metrics.k8s.io lists the node)\n", took.Seconds())
	} else {
		fmt.Println("kubectl top nodes: no node metrics within 5 minutes")
	}
	fmt.Printf("idling %s ...\n", idle)
	time.Sleep(idle)
	cd := testutil.ContainerdPID(data)
	pids := append([]int{p.cmd.Process.Pid}, cd)
	pids = append(pids, shimTrees(containerdSocket(cd))...)
	rss := 0
	for _, pid := range pids {
		rss += smapsRollup(pid)["Rss"]
	}
	fmt.Printf("  by program (RSS counts a shared page once per process, PSS splits it): %s\n", byProgram(pids))
	running := map[string]int{}
	if pods, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running[p.Namespace]++
			}
		}
	}
	load := record("bundle-rss", fmt.Sprintf("%d MiB (%d Plumber)", rss/1024, replicas))
	fmt.Printf("RSS bramble+containerd+pods: %d MiB (%d processes; pods Running by namespace: %v), load %s\n", rss/1024, len(pids), running, load)
	return nil
}

// firstNodeMetrics sends how long after begin metrics.k8s.io first listed
// a node with its usage (what kubectl top nodes needs); 0 if not before
// ctx ends.
func firstNodeMetrics(ctx context.Context, kubeconfig string, begin time.Time) <-chan time.Duration {
	took := make(chan time.Duration, 1)
	go func() {
		defer close(took)
		cs, err := waitClient(ctx, kubeconfig)
		if err != nil {
			return
		}
		var list struct {
			Items []struct {
				Usage map[string]string `json:"usage"`
			} `json:"items"`
		}
		if poll(ctx, func() bool {
			time.Sleep(400 * time.Millisecond) // 2 requests a second, not 10
			b, err := cs.RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/nodes").DoRaw(ctx)
			return err == nil && json.Unmarshal(b, &list) == nil && len(list.Items) > 0 && list.Items[0].Usage["cpu"] != ""
		}) == nil {
			took <- time.Since(begin)
		}
	}()
	return took
}

// shimTrees lists the containerd shims serving the containerd at socket
// (all shims when "") and all their descendants.
func shimTrees(socket string) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		if len(fields) > 1 {
			parent[pid], _ = strconv.Atoi(fields[1])
		}
	}
	shims := containerdShims(socket)
	in := map[int]bool{}
	for _, s := range shims {
		in[s] = true
	}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if in[pp] && !in[pid] {
				in[pid], changed = true, true
			}
		}
	}
	out := make([]int, 0, len(in))
	for pid := range in {
		out = append(out, pid)
	}
	return out
}

// byProgram sums RSS and PSS by program name (comm), largest first: where
// the bundle's memory goes.
func byProgram(pids []int) string {
	type sum struct {
		name        string
		n, rss, pss int
	}
	sums := map[string]*sum{}
	for _, pid := range pids {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if sums[name] == nil {
			sums[name] = &sum{name: name}
		}
		m := smapsRollup(pid)
		sums[name].n++
		sums[name].rss += m["Rss"]
		sums[name].pss += m["Pss"]
	}
	list := make([]*sum, 0, len(sums))
	totalPSS := 0
	for _, s := range sums {
		list = append(list, s)
		totalPSS += s.pss
	}
	sort.Slice(list, func(i, j int) bool { return list[i].rss > list[j].rss })
	parts := make([]string, 0, len(list))
	for _, s := range list {
		parts = append(parts, fmt.Sprintf("%s x%d %d/%d MiB", s.name, s.n, s.rss/1024, s.pss/1024))
	}
	return fmt.Sprintf("PSS total %d MiB; RSS/PSS: %s", totalPSS/1024, strings.Join(parts, ", "))
}

// loadavg is the machine's 1-minute load average, printed with figures that
// depend on it.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// plumberReplicas is the -plumber-replicas flag.
var plumberReplicas int32 = 3
