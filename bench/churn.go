package main

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Flags of the churn scenario (set in main).
var (
	churnRollouts int
	churnInterval time.Duration
)

// churnTimeout bounds the wait for one rollout's new ReplicaSet to be
// available; a rollout that takes longer is counted and the next one starts.
const churnTimeout = 30 * time.Second

// churn: a day of "a Deployment of 10 pods rolled every minute", with time
// compressed (a rollout every -churn-interval instead of every minute), on a
// single-node server; the SQLite file's size (state.db + WAL) every 10 % and
// at the end, and whether it still grows.
func churn(bin string, _ time.Duration) error {
	if churnRollouts < 1 || churnInterval < 0 {
		return fmt.Errorf("-churn-rollouts must be >= 1 and -churn-interval >= 0")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n, cs, err := startBusyboxNode(ctx, bin)
	if err != nil {
		return err
	}
	defer n.stop()
	deployments := cs.AppsV1().Deployments("default")
	if _, err := deployments.Create(ctx, churnDeployment(), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment: %w", err)
	}
	if err := poll(ctx, func() bool { return rolledOut(ctx, cs) }); err != nil {
		return fmt.Errorf("10 replicas available: %w", err)
	}

	fmt.Printf("%d rollouts of a 10-pod Deployment, one every %s or as soon as the previous one is done (waiting at most %s for it): %s at least\n",
		churnRollouts, churnInterval, churnTimeout, time.Duration(churnRollouts)*churnInterval)
	fmt.Printf("time is compressed: a rollout stands for a minute of a real day (-churn-interval 1m runs in real time)\n")
	fmt.Printf("the timers are not compressed: kine compacts every 5 min of real time and keeps that much history,\n" +
		"events expire after 1 h of real time; so this run holds more history and events at once than a real day would\n")
	fmt.Printf("start:          %s, load %s\n", churnSample(ctx, cs, n.data), loadavg())

	begin := time.Now()
	var samples []int64
	late := 0
	next := 0
	for i := 1; i <= churnRollouts; i++ {
		started := time.Now()
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`,
			started.Format(time.RFC3339Nano))
		// A few tries: one failed request should not end a run of hours.
		for try := 1; ; try++ {
			_, err := deployments.Patch(context.Background(), "churn", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
			if err == nil {
				break
			}
			if try == 5 {
				return fmt.Errorf("rollout %d: %w", i, err)
			}
			time.Sleep(2 * time.Second)
		}
		wctx, wcancel := context.WithTimeout(context.Background(), churnTimeout)
		if poll(wctx, func() bool { return rolledOut(wctx, cs) }) != nil {
			late++
		}
		wcancel()
		if i*10/churnRollouts > next || i == churnRollouts {
			next = i * 10 / churnRollouts
			db, wal, _ := sqliteFiles(n.data)
			samples = append(samples, db+wal)
			fmt.Printf("rollout %4d/%d (%3d %%, %s): %s, load %s\n", i, churnRollouts, i*100/churnRollouts,
				time.Since(begin).Round(time.Second), churnSample(context.Background(), cs, n.data), loadavg())
		}
		time.Sleep(time.Until(started.Add(churnInterval)))
	}
	elapsed := time.Since(begin)
	growing := len(samples) >= 3 && samples[len(samples)-3] < samples[len(samples)-2] && samples[len(samples)-2] < samples[len(samples)-1]
	state, short := "not growing (the last 3 samples do not increase)", "not growing"
	if growing {
		state, short = "STILL GROWING (the last 3 samples increase)", "still growing"
	}
	last := samples[len(samples)-1]
	load := record("churn-sqlite", fmt.Sprintf("%.1f MB (db+wal), %s, %.0fx compressed", float64(last)/1e6, short, float64(churnRollouts)*60/elapsed.Seconds()))
	fmt.Printf("SQLite after %d rollouts in %s (%.0fx compressed; %d rollouts not done within %s): %.1f MB = %.1f MiB, %s, load %s\n",
		churnRollouts, elapsed.Round(time.Second), float64(churnRollouts)*60/elapsed.Seconds(), late, churnTimeout,
		float64(last)/1e6, mibOf(last), state, load)
	return nil
}

// churnDeployment is the rolled Deployment: 10 busybox pods that sleep. The
// grace period is 1 s (sleep as PID 1 ignores SIGTERM): the old pods go at
// once instead of piling up for 30 s each; the objects written are the same.
func churnDeployment() *appsv1.Deployment {
	replicas, grace := int32(10), int64(1)
	labels := map[string]string{"app": "churn"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "churn"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name: "sleep", Image: "docker.io/bramble/busybox:test", ImagePullPolicy: corev1.PullIfNotPresent,
						Command: []string{"sleep", "3600"},
					}},
				},
			},
		},
	}
}

// rolledOut says whether the churn Deployment's latest template runs on all
// 10 replicas, available, and no old replica is left.
func rolledOut(ctx context.Context, cs *kubernetes.Clientset) bool {
	d, err := cs.AppsV1().Deployments("default").Get(ctx, "churn", metav1.GetOptions{})
	if err != nil {
		return false
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == 10 && s.AvailableReplicas == 10 && s.Replicas == 10
}

// churnSample is the SQLite size and the number of objects that grow with
// churn (events, ReplicaSets, pods).
func churnSample(ctx context.Context, cs *kubernetes.Clientset, dataDir string) string {
	// Limit 1: one item back, the rest counted by the server.
	one := metav1.ListOptions{Limit: 1}
	count := func(items int, l metav1.ListInterface, err error) string {
		switch r := l.GetRemainingItemCount(); {
		case err != nil:
			return "?"
		case l.GetContinue() == "":
			return fmt.Sprint(items)
		case r != nil:
			return fmt.Sprint(int64(items) + *r)
		}
		return "?"
	}
	e, err := cs.CoreV1().Events("").List(ctx, one)
	events := count(len(e.Items), e, err)
	r, err := cs.AppsV1().ReplicaSets("default").List(ctx, one)
	rs := count(len(r.Items), r, err)
	p, err := cs.CoreV1().Pods("").List(ctx, one)
	pods := count(len(p.Items), p, err)
	return fmt.Sprintf("%s; %s events, %s ReplicaSets, %s pods", sqliteSizes(dataDir), events, rs, pods)
}
