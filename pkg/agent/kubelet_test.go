package agent

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	kubeletoptions "k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletconfigvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/tlspolicy"
)

type kubeletSettingsResult struct {
	flags *kubeletoptions.KubeletFlags
	kc    *kubeletconfig.KubeletConfiguration
}

// testConfig is a node as the CLI builds it, in a temporary data dir.
func testConfig(t *testing.T) Config {
	dir := t.TempDir()
	_, cluster, _ := net.ParseCIDR("10.42.0.0/16")
	_, service, _ := net.ParseCIDR("10.43.0.0/16")
	return Config{
		NodeName:       "pi1",
		NodeIP:         net.ParseIP("192.168.1.10"),
		DataDir:        dir,
		RunDir:         filepath.Join(dir, "run"),
		ClusterCIDR:    cluster,
		ServiceCIDR:    service,
		ClusterDNS:     net.ParseIP("10.43.0.10"),
		ClusterDomain:  "cluster.local",
		CgroupDriver:   "cgroupfs",
		CgroupRoot:     "/",
		SandboxImage:   "docker.io/bramble/pause:test",
		Snapshotter:    "overlayfs",
		KubeletRootDir: filepath.Join(dir, "kubelet"),
		ResolvConf:     "/etc/resolv.conf",
		ProxyMode:      "iptables",
		FlannelBackend: "vxlan",
		Creds:          nodecreds.In(filepath.Join(dir, "agent")),
	}
}

// settingsOf is kubeletSettings for testConfig changed by change.
func settingsOf(t *testing.T, change func(*Config)) (*kubeletoptions.KubeletFlags, *kubeletconfig.KubeletConfiguration, error) {
	cfg := testConfig(t)
	change(&cfg)
	a := New(cfg, slog.New(slog.DiscardHandler))
	return a.kubeletSettings(context.Background(), filepath.Join(cfg.DataDir, "kubelet.yaml"))
}

func TestTaints(t *testing.T) {
	tests := []struct {
		specs   []string
		want    []map[string]string
		wantErr string
	}{
		{specs: nil, want: []map[string]string{}},
		{specs: []string{"dedicated=gpu:NoSchedule"}, want: []map[string]string{{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}}},
		{specs: []string{"spot:PreferNoSchedule", "a=b:NoExecute"}, want: []map[string]string{
			{"key": "spot", "value": "", "effect": "PreferNoSchedule"},
			{"key": "a", "value": "b", "effect": "NoExecute"},
		}},
		{specs: []string{"dedicated=gpu"}, wantErr: `--node-taint "dedicated=gpu": the effect must be`},
		{specs: []string{"a=b:NoScheduleX"}, wantErr: "the effect must be NoSchedule, PreferNoSchedule or NoExecute"},
		{specs: []string{"=b:NoSchedule"}, wantErr: `--node-taint "=b:NoSchedule": no key`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.specs, ","), func(t *testing.T) {
			got, err := taints(tt.specs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("taints(%q) = %v, %v; want an error with %q", tt.specs, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("taints(%q) = %v, %v; want %v", tt.specs, got, err, tt.want)
			}
		})
	}
}

// TestKubeletSettings loads the generated configuration the way the
// kubelet does and validates it as the kubelet would at start.
func TestKubeletSettings(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		check  func(t *testing.T, s kubeletSettingsResult)
	}{
		{"cgroup v1 host without CAP_SYS_RESOURCE (the CI VM)", func(c *Config) { c.RestrictOOMScoreAdj = true }, func(t *testing.T, s kubeletSettingsResult) {
			if s.kc.CgroupDriver != "cgroupfs" || s.kc.FailCgroupV1 {
				t.Errorf("cgroupDriver %q, failCgroupV1 %v; want cgroupfs, false", s.kc.CgroupDriver, s.kc.FailCgroupV1)
			}
			if s.kc.OOMScoreAdj != 0 {
				t.Errorf("oomScoreAdj %d, want 0 (no negative values without CAP_SYS_RESOURCE)", s.kc.OOMScoreAdj)
			}
		}},
		{"Raspberry Pi OS: systemd, cgroup v2", func(c *Config) { c.CgroupDriver = "systemd" }, func(t *testing.T, s kubeletSettingsResult) {
			if s.kc.CgroupDriver != "systemd" || s.kc.OOMScoreAdj >= 0 {
				t.Errorf("cgroupDriver %q oomScoreAdj %d; want systemd and the kubelet's negative default", s.kc.CgroupDriver, s.kc.OOMScoreAdj)
			}
		}},
		{"taints and labels", func(c *Config) {
			c.NodeTaints = []string{"dedicated=gpu:NoSchedule"}
			c.NodeLabels = []string{"zone=shelf", "tier=edge"}
		}, func(t *testing.T, s kubeletSettingsResult) {
			want := []v1.Taint{{Key: "dedicated", Value: "gpu", Effect: v1.TaintEffectNoSchedule}}
			if !reflect.DeepEqual(s.kc.RegisterWithTaints, want) {
				t.Errorf("registerWithTaints %+v, want %+v", s.kc.RegisterWithTaints, want)
			}
			if want := map[string]string{"zone": "shelf", "tier": "edge"}; !reflect.DeepEqual(s.flags.NodeLabels, want) {
				t.Errorf("node labels %v, want %v", s.flags.NodeLabels, want)
			}
		}},
		{"--kubelet-arg overrides the generated config and flags", func(c *Config) {
			c.KubeletArgs = []string{"max-pods=50", "--cgroup-root=/pi2", "node-ip=10.250.0.2"}
		}, func(t *testing.T, s kubeletSettingsResult) {
			if s.kc.MaxPods != 50 || s.kc.CgroupRoot != "/pi2" || s.flags.NodeIP != "10.250.0.2" {
				t.Errorf("maxPods %d cgroupRoot %q nodeIP %q", s.kc.MaxPods, s.kc.CgroupRoot, s.flags.NodeIP)
			}
		}},
		{"secure defaults", func(*Config) {}, func(t *testing.T, s kubeletSettingsResult) {
			kc := s.kc
			if kc.Authentication.Anonymous.Enabled || !kc.Authentication.Webhook.Enabled || kc.Authorization.Mode != "Webhook" || kc.ReadOnlyPort != 0 {
				t.Errorf("authn %+v authz %q readOnlyPort %d", kc.Authentication, kc.Authorization.Mode, kc.ReadOnlyPort)
			}
			if kc.TLSMinVersion != "VersionTLS12" || kc.TLSCertFile == "" || kc.Authentication.X509.ClientCAFile == "" {
				t.Errorf("tls: min %q cert %q clientCA %q", kc.TLSMinVersion, kc.TLSCertFile, kc.Authentication.X509.ClientCAFile)
			}
			if !slices.Equal(kc.TLSCipherSuites, tlspolicy.CipherSuiteNames()) {
				t.Errorf("tlsCipherSuites %q, want %q", kc.TLSCipherSuites, tlspolicy.CipherSuiteNames())
			}
			if kc.StreamingConnectionIdleTimeout.Duration != 5*time.Minute {
				t.Errorf("streamingConnectionIdleTimeout %s, want 5m", kc.StreamingConnectionIdleTimeout.Duration)
			}
			if kc.ProtectKernelDefaults {
				t.Error("protectKernelDefaults on although the kernel parameters were not checked")
			}
			if len(kc.ClusterDNS) != 1 || kc.ClusterDNS[0] != "10.43.0.10" || kc.ClusterDomain != "cluster.local" {
				t.Errorf("cluster DNS %v domain %q", kc.ClusterDNS, kc.ClusterDomain)
			}
			if !strings.HasSuffix(kc.ContainerRuntimeEndpoint, "/containerd.sock") || !strings.HasPrefix(kc.ContainerRuntimeEndpoint, "unix://") {
				t.Errorf("containerRuntimeEndpoint %q", kc.ContainerRuntimeEndpoint)
			}
			if s.flags.HostnameOverride != "pi1" || s.flags.NodeIP != "192.168.1.10" {
				t.Errorf("hostname %q node IP %q", s.flags.HostnameOverride, s.flags.NodeIP)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, kc, err := settingsOf(t, tt.change)
			if err != nil {
				t.Fatal(err)
			}
			// What setupKubelet checks next (without touching the process-wide gates).
			if err := kubeletconfigvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
				t.Fatalf("the kubelet would refuse its configuration: %v", err)
			}
			tt.check(t, kubeletSettingsResult{flags: flags, kc: kc})
		})
	}
}

func TestKubeletSettingsErrors(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"bad taint", func(c *Config) { c.NodeTaints = []string{"dedicated=gpu"} }, `--node-taint "dedicated=gpu"`},
		{"unknown kubelet flag", func(c *Config) { c.KubeletArgs = []string{"no-such-flag=1"} }, "--kubelet-arg: unknown flag: --no-such-flag"},
		{"bad kubelet flag value", func(c *Config) { c.KubeletArgs = []string{"max-pods=many"} }, `--kubelet-arg: invalid argument "many"`},
		{"bad node label", func(c *Config) { c.NodeLabels = []string{"not a label"} }, "--node-label: invalid node labels: 'not a label'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := settingsOf(t, tt.change)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}

// With the kernel parameters as the kubelet expects them (kernelDefaults
// said so), the kubelet checks them instead of setting them.
func TestKubeletProtectKernelDefaults(t *testing.T) {
	cfg := testConfig(t)
	a := New(cfg, slog.New(slog.DiscardHandler))
	a.protectKernelDefaults = true
	_, kc, err := a.kubeletSettings(context.Background(), filepath.Join(cfg.DataDir, "kubelet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !kc.ProtectKernelDefaults {
		t.Error("protectKernelDefaults off")
	}
}
