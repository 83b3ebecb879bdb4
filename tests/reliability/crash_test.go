package reliability

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// TestKillNine: a server with its node and a running pod, under a stream of
// ConfigMap creates; kill -9 of bramble, then of its containerd, each in the
// middle of the stream. After each, every create the apiserver acknowledged
// is there, and the pod kept its container (same ID, restartCount 0).
func TestKillNine(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.StartBusyboxNode(t, readyTimeout)
	cs := clientset(t, s)
	ensureNamespace(t, cs, "crash")
	testutil.WaitServiceAccount(t, s, "crash")
	s.MustKubectl("-n", "crash", "run", "sleeper", "--image="+testutil.Busybox, "--image-pull-policy=Never", "--command", "--", "sleep", "1000000")
	podReady := func() bool {
		out, _ := s.Kubectl("-n", "crash", "get", "pod", "sleeper", "-o", "jsonpath={.status.containerStatuses[0].ready}")
		return out == "true"
	}
	testutil.WaitFor(t, 2*time.Minute, "pod sleeper Ready", podReady)
	containerID := s.MustKubectl("-n", "crash", "get", "pod", "sleeper", "-o", "jsonpath={.status.containerStatuses[0].containerID}")

	var acked []string
	for _, victim := range []string{"bramble", "containerd"} {
		st := startStream(cs, "crash", victim, 4)
		time.Sleep(2 * time.Second)
		began := time.Now()
		switch victim {
		case "bramble":
			// Only bramble: its containerd and the shims live on.
			if err := unix.Kill(s.PID(), unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if !s.Wait(30 * time.Second) {
				t.Fatal("bramble survived SIGKILL for 30 s")
			}
		case "containerd":
			pid := testutil.ContainerdPID(s.DataDir)
			if pid == 0 {
				t.Fatal("no containerd process for the data dir")
			}
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		now := st.stop(time.Time{})
		acked = append(acked, now...)
		if victim == "containerd" {
			// bramble stops when its containerd dies (systemd starts it
			// again): wait for that stop, a few seconds.
			s.Wait(30 * time.Second)
		}
		if !s.Running() {
			t.Logf("kill -9 of %s: bramble exited (status %d); starting it again", victim, s.ExitCode())
			s.Start()
		}
		s.WaitReady(readyTimeout)
		testutil.WaitNodeReady(t, s, readyTimeout)
		if lost := missing(t, cs, "crash", acked); len(lost) > 0 {
			t.Fatalf("kill -9 of %s: %d of %d acknowledged creates lost, e.g. %v", victim, len(lost), len(acked), first(lost, 5))
		}
		testutil.WaitFor(t, 2*time.Minute, "pod sleeper Ready after the kill -9 of "+victim, podReady)
		id := s.MustKubectl("-n", "crash", "get", "pod", "sleeper", "-o", "jsonpath={.status.containerStatuses[0].containerID}")
		restarts := s.MustKubectl("-n", "crash", "get", "pod", "sleeper", "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
		t.Logf("kill -9 of %s: %d creates acknowledged in this stream (%d failed), 0 of %d lost; node and pod Ready %s after the kill; restartCount %s",
			victim, len(now), st.failed, len(acked), time.Since(began).Round(100*time.Millisecond), restarts)
		if id != containerID || restarts != "0" {
			t.Errorf("kill -9 of %s: pod container %s -> %s, restartCount %s (want the same container, 0)", victim, containerID, id, restarts)
		}
	}
	s.Stop(30 * time.Second)
}
