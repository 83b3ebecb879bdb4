// Command bench measures bramble and prints its figures. It is not a test:
// nothing here fails on a number. Run it with `make bench`.
//
//	go run ./bench [-idle 60s] [-only controlplane]
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// scenarioFigures are the goal rows (results.go) each scenario measures.
var scenarioFigures = map[string][]string{
	"node":    {"server-pss", "server-anon", "server-cpu", "server-writes", "start-ready", "restart-ready"},
	"addons":  {"bundle-rss"},
	"cluster": {"agent-rss"},
	"churn":   {"churn-sqlite"},
}

func main() {
	idle := flag.Duration("idle", 3*time.Minute, "idle time before memory and CPU are read (the control plane scenario idles at most 60 s)")
	only := flag.String("only", "", "run only this scenario (controlplane, node, addons, cluster, churn)")
	bin := flag.String("bin", "bin/bramble", "bramble binary")
	flag.IntVar(&churnRollouts, "churn-rollouts", 1440, "churn: rollouts of the Deployment (1440 = one a minute for 24 h)")
	flag.DurationVar(&churnInterval, "churn-interval", 5*time.Second, "churn: time between rollout starts (1m: real time, uncompressed)")
	flag.Func("plumber-replicas", "addons: scale the Plumber example to this many replicas before idling (default 3, the manifest's; 1 = the README's Pi 3 profile)", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 3 {
			return fmt.Errorf("want 0 to 3")
		}
		plumberReplicas = int32(n)
		return nil
	})
	resident := flag.Int("resident", 0, "only print which parts of this process's executable are resident")
	flag.Parse()
	if *resident > 0 {
		fmt.Print(residentBinary(*resident, 25))
		return
	}
	*bin, _ = filepath.Abs(*bin)
	scenarios := map[string]func(string, time.Duration) error{
		"controlplane": controlPlane,
		"node":         node,
		"addons":       addons,
		"cluster":      clusterScenario,
		"churn":        churn,
	}
	if _, ok := scenarios[*only]; *only != "" && !ok {
		fmt.Fprintf(os.Stderr, "bench: no scenario %q\n", *only)
		os.Exit(2)
	}
	notRun := map[string]string{}
	failed := false
	// churn takes hours (1440 rollouts): only with -only churn.
	for _, name := range []string{"controlplane", "node", "addons", "cluster", "churn"} {
		why := ""
		switch {
		case failed:
			why = "an earlier scenario failed"
		case *only != "" && *only != name:
			why = "not run: -only " + *only
		case *only == "" && name == "churn":
			why = "takes hours: go run ./bench -only churn"
		}
		if why == "" {
			fmt.Printf("== %s\n", name)
			if err := scenarios[name](*bin, *idle); err != nil {
				fmt.Fprintf(os.Stderr, "bench %s: %v\n", name, err)
				failed, why = true, "scenario "+name+" failed"
			}
		}
		for _, key := range scenarioFigures[name] {
			if _, ok := results[key]; !ok && why != "" {
				notRun[key] = why
			}
		}
	}
	printSummary(notRun)
	if failed {
		os.Exit(1)
	}
}

// controlPlane: seconds from process start to /readyz ok, on a fresh data dir
// (includes certificate generation) and on a restart; RSS and CPU when idle.
func controlPlane(bin string, idle time.Duration) error {
	idle = min(idle, 60*time.Second)
	dir, err := os.MkdirTemp("", "bramble-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port := freePort()
	args := []string{"server", "--disable-agent", "--data-dir", filepath.Join(dir, "data"),
		"--https-listen-port", strconv.Itoa(port), "--write-kubeconfig", filepath.Join(dir, "kubeconfig"),
		"--bind-address", "127.0.0.1", "--config", "/dev/null"}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", port)

	for _, run := range []string{"fresh start", "restart"} {
		p, err := start(bin, args)
		if err != nil {
			return err
		}
		took, err := waitOK(url, 2*time.Minute)
		if err != nil {
			p.kill()
			return fmt.Errorf("%s: %w", run, err)
		}
		fmt.Printf("readyz after %-12s %6.2f s\n", run+":", took.Seconds())
		if run == "restart" {
			cpu0 := p.cpuTicks()
			time.Sleep(idle)
			cpu1 := p.cpuTicks()
			fmt.Printf("idle %s: RSS %d MiB, CPU %.1f %% of one core\n", idle, p.rssKiB()/1024,
				100*float64(cpu1-cpu0)/100/idle.Seconds())
		}
		stopTook := p.stop(15 * time.Second)
		fmt.Printf("stop after SIGTERM (%s): %.2f s\n", run, stopTook.Seconds())
	}
	return nil
}

type proc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time // just before the process was started
}

func start(bin string, args []string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log, err := os.CreateTemp("", "bramble-bench-log-")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), started: started}
	go func() { _ = cmd.Wait(); log.Close(); os.Remove(log.Name()); close(p.done) }()
	return p, nil
}

func (p *proc) stop(timeout time.Duration) time.Duration {
	begin := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
	}
	return time.Since(begin)
}

func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// rssKiB reads VmRSS from /proc.
func (p *proc) rssKiB() int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	return 0
}

// cpuTicks is utime+stime in clock ticks (100 Hz on Linux).
func (p *proc) cpuTicks() int { return cpuTicksOf(p.cmd.Process.Pid) }

func cpuTicksOf(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(data)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(fields[11])
	k, _ := strconv.Atoi(fields[12])
	return u + k
}

func waitOK(url string, timeout time.Duration) (time.Duration, error) {
	begin := time.Now()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		// The bench only times readiness; the tests check the certificates.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
	}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(begin), nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s not ok within %s", url, timeout)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
