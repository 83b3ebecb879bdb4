package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// node: a full single-node server. Seconds to node Ready, a 10-replica
// Deployment to all Running, 500 ConfigMap creates; then, idle, memory of
// bramble + containerd, CPU over 60 s and bytes written over 60 s.
func node(bin string, idle time.Duration) error {
	n, err := startNode(bin, false, filepath.Join("dist", "images", runtime.GOARCH, "busybox.tar"))
	if err != nil {
		return err
	}
	defer n.stop()
	p, data, kubeconfig := n.p, n.data, n.kubeconfig
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs, err := waitClient(ctx, kubeconfig)
	if err != nil {
		return err
	}
	if err := poll(ctx, func() bool {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) == 0 {
			return false
		}
		for _, c := range nodes.Items[0].Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	}); err != nil {
		return fmt.Errorf("node Ready: %w", err)
	}
	fmt.Printf("node Ready after start:      %6.2f s\n", time.Since(begin).Seconds())

	begin = time.Now()
	out, err := exec.Command(bin, "kubectl", "--kubeconfig", kubeconfig, "create", "deployment", "bench", "--replicas=10",
		"--image=docker.io/bramble/busybox:test", "--", "sleep", "3600").CombinedOutput()
	if err != nil {
		return fmt.Errorf("create deployment: %v: %s", err, out)
	}
	if err := poll(ctx, func() bool {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
		if err != nil {
			return false
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 10
	}); err != nil {
		return fmt.Errorf("10 replicas: %w", err)
	}
	fmt.Printf("10 replicas Running:        %6.2f s\n", time.Since(begin).Seconds())

	begin = time.Now()
	for i := 0; i < 500; i++ {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i)}, Data: map[string]string{"k": "v"}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("configmap %d: %w", i, err)
		}
	}
	fmt.Printf("500 ConfigMap creates:      %6.2f s\n", time.Since(begin).Seconds())
	_, _ = exec.Command(bin, "kubectl", "--kubeconfig", kubeconfig, "delete", "deployment", "bench").CombinedOutput()

	fmt.Printf("idling %s ...\n", idle)
	time.Sleep(idle)
	pids := []int{p.cmd.Process.Pid}
	if c := containerdPID(data); c > 0 {
		pids = append(pids, c)
	}
	var rss, pss, anon int
	for _, pid := range pids {
		r := smapsRollup(pid)
		rss, pss, anon = rss+r["Rss"], pss+r["Pss"], anon+r["Anonymous"]
	}
	fmt.Printf("idle memory bramble+containerd: RSS %d MiB, PSS %d MiB, anonymous %d MiB\n", rss/1024, pss/1024, anon/1024)
	cpu0, w0 := ticks(pids), written(pids)
	time.Sleep(60 * time.Second)
	cpu1, w1 := ticks(pids), written(pids)
	fmt.Printf("idle CPU over 60 s:          %5.1f %% of one core\n", float64(cpu1-cpu0)/60)
	fmt.Printf("bytes written over 60 s:     %5.2f MiB\n", float64(w1-w0)/(1<<20))
	return nil
}

func waitClient(ctx context.Context, kubeconfig string) (*kubernetes.Clientset, error) {
	var cs *kubernetes.Clientset
	err := poll(ctx, func() bool {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return false
		}
		cfg.QPS, cfg.Burst = 1000, 1000
		cs, err = kubernetes.NewForConfig(cfg)
		return err == nil
	})
	return cs, err
}

func poll(ctx context.Context, ok func() bool) error {
	for ctx.Err() == nil {
		if ok() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ctx.Err()
}

// containerdPID finds bramble's containerd child.
func containerdPID(dataDir string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 2 && args[1] == "containerd" && strings.Contains(string(cmdline), dataDir) {
			return pid
		}
	}
	return 0
}

// smapsRollup reads /proc/PID/smaps_rollup in KiB.
func smapsRollup(pid int) map[string]int {
	out := map[string]int{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 {
			n, err := strconv.Atoi(fields[1])
			if err == nil {
				out[strings.TrimSuffix(fields[0], ":")] = n
			}
		}
	}
	return out
}

func ticks(pids []int) int {
	total := 0
	for _, pid := range pids {
		total += cpuTicksOf(pid)
	}
	return total
}

// written sums write_bytes from /proc/PID/io.
func written(pids []int) int {
	total := 0
	for _, pid := range pids {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
				n, _ := strconv.Atoi(v)
				total += n
			}
		}
	}
	return total
}
