// Package soak holds the long tests (`make test-soak`, not part of `make
// test`): a server with its node and pods restarted again and again (a few
// minutes per cycle on a Pi: every cycle ends with the node and every pod
// Ready, the same containers, no restarts, and no ERROR line in the log),
// and an agent cut off from its server for 5 minutes.
package soak

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

const cycles = 10

var errorLine = regexp.MustCompile(`(?m)^.*level=(ERROR|error).*$`)

func TestRestartCycles(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.StartBusyboxNode(t, 3*time.Minute)
	s.MustKubectl("create", "namespace", "soak")
	testutil.WaitServiceAccount(t, s, "soak")
	s.MustKubectl("-n", "soak", "create", "deployment", "sleepers", "--image="+testutil.Busybox, "--replicas=3", "--", "sleep", "1000000")
	s.MustKubectl("-n", "soak", "patch", "deployment", "sleepers", "--type=json",
		`-p=[{"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"Never"}]`)
	waitPodsReady(t, s, 3)
	want := podState(t, s)
	t.Logf("pods: %s", want)

	errorsPerRestart := make([]int, 0, cycles)
	mark := len(s.Log.String()) // the log up to all pods Ready
	for cycle := 1; cycle <= cycles; cycle++ {
		stopTook := s.Stop(30 * time.Second)
		stopLog := s.Log.String()[mark:]
		s.Start()
		ready := s.WaitReady(3 * time.Minute)
		testutil.WaitNodeReady(t, s, 3*time.Minute)
		waitPodsReady(t, s, 3)
		if got := podState(t, s); got != want {
			t.Errorf("cycle %d: pods changed:\n was %s\n now %s", cycle, want, got)
		}
		// This restart's errors: those of the stop, then those of the start
		// until every pod was Ready again.
		startLog := s.Log.String()
		mark = len(startLog)
		lines := append(errorLine.FindAllString(stopLog, -1), errorLine.FindAllString(startLog, -1)...)
		errorsPerRestart = append(errorsPerRestart, len(lines))
		t.Logf("cycle %d: stop %s, ready %s, %d ERROR lines", cycle, stopTook.Round(100*time.Millisecond), ready.Round(100*time.Millisecond), len(lines))
		for _, l := range lines {
			t.Logf("  %s", l)
		}
	}
	t.Logf("ERROR lines per restart: %v", errorsPerRestart)
	for i, n := range errorsPerRestart {
		if n > 0 {
			t.Errorf("restart %d wrote %d ERROR lines: a clean stop and start writes none", i+1, n)
		}
	}
	s.Stop(30 * time.Second)
}

// podState is each pod's name, container ID and restart count.
func podState(t *testing.T, s *testutil.Server) string {
	t.Helper()
	return s.MustKubectl("-n", "soak", "get", "pods", "-o",
		`jsonpath={range .items[*]}{.metadata.name}={.status.containerStatuses[0].containerID}/{.status.containerStatuses[0].restartCount} {end}`)
}

func waitPodsReady(t *testing.T, s *testutil.Server, n int) {
	t.Helper()
	testutil.WaitFor(t, 3*time.Minute, "pods Ready", func() bool {
		out, _ := s.Kubectl("-n", "soak", "get", "pods", "-o", `jsonpath={range .items[*]}{.status.containerStatuses[0].ready} {end}`)
		return strings.Count(out, "true") == n && !strings.Contains(out, "false")
	})
}
