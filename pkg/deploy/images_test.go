package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"
)

func TestBundledImages(t *testing.T) {
	bundled := fstest.MapFS{
		"app.yaml": {Data: []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  template:
    spec:
      initContainers: [{name: init, image: "busybox:1"}]
      containers: [{name: a, image: "example.org/app:{{ .ClusterDomain }}"}, {name: b, image: "busybox:1"}]
---
apiVersion: v1
kind: Service
metadata: {name: app}
`)},
		"job.yaml": {Data: []byte(`apiVersion: batch/v1
kind: CronJob
metadata: {name: j}
spec: {jobTemplate: {spec: {template: {spec: {containers: [{name: c, image: "cron:2"}]}}}}}
`)},
		"gone.yaml": {Data: []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}\n")},
		"skip.yaml": {Data: []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: y}]}\n")},
		"cm.yaml":   {Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")},
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "skip.yaml.skip"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := BundledImages(Config{Dir: dir, Bundled: bundled, Disabled: []string{"gone"}, Values: Values{ClusterDomain: "v1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"app": {"busybox:1", "example.org/app:v1"}, "job": {"cron:2"}}
	if len(got) != len(want) {
		t.Fatalf("BundledImages = %v, want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("BundledImages[%s] = %v, want %v", k, got[k], v)
		}
	}
}
