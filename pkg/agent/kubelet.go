package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	kubeletoptions "k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletconfigvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
	"sigs.k8s.io/yaml"

	"github.com/bramble-pi/bramble/pkg/kernelparams"
	"github.com/bramble-pi/bramble/pkg/pki"
	"github.com/bramble-pi/bramble/pkg/tlspolicy"
)

// kubeletConfig is the KubeletConfiguration bramble generates.
func (a *Agent) kubeletConfig() (map[string]any, error) {
	c := a.cfg
	registerTaints, err := taints(c.NodeTaints)
	if err != nil {
		return nil, err
	}
	conf := map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            "0.0.0.0",
		"port":               10250,
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        10248,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true, "cacheTTL": "2m"},
			"x509":      map[string]any{"clientCAFile": c.Creds.ClientCA},
		},
		"authorization":               map[string]any{"mode": "Webhook"},
		"tlsCertFile":                 c.Creds.ServingCert,
		"tlsPrivateKeyFile":           c.Creds.ServingKey,
		"tlsMinVersion":               tlspolicy.MinVersionName,
		"tlsCipherSuites":             tlspolicy.CipherSuiteNames(),
		"clusterDNS":                  []string{c.ClusterDNS.String()},
		"clusterDomain":               c.ClusterDomain,
		"containerRuntimeEndpoint":    "unix://" + a.containerd.Socket(),
		"imageServiceEndpoint":        "unix://" + a.containerd.Socket(),
		"cgroupDriver":                c.CgroupDriver,
		"cgroupRoot":                  c.CgroupRoot,
		"failCgroupV1":                false,
		"failSwapOn":                  false,
		"resolvConf":                  c.ResolvConf,
		"staticPodPath":               filepath.Join(c.agentDir(), "pod-manifests"),
		"serializeImagePulls":         false,
		"protectKernelDefaults":       a.protectKernelDefaults,
		"evictionHard":                map[string]string{"imagefs.available": "5%", "nodefs.available": "5%", "memory.available": "50Mi"},
		"evictionMinimumReclaim":      map[string]string{"imagefs.available": "10%", "nodefs.available": "10%"},
		"imageGCHighThresholdPercent": 90,
		"imageGCLowThresholdPercent":  80,
		// Idle, each write is a row in SQLite on an SD card: the full node
		// status (3 KB) goes every 5 min (Kubernetes' default; a changed
		// condition is still reported at once) and the Lease every 20 s (a
		// quarter of an 80 s lease; Kubernetes has 40 s, renewed every 10 s).
		// The lease renewals are nearly all of an idle server's writes:
		// 20 s instead of 15 s writes a quarter less (make bench). The node
		// controller's grace period (50 s) still spans two renewals and the
		// kubelet's retries after a failed one, so a node is marked NotReady
		// as soon as before.
		"nodeStatusReportFrequency": "5m",
		"nodeLeaseDurationSeconds":  80,
		"registerWithTaints":        registerTaints,
		"logging":                   map[string]any{"format": "text"},
	}
	// Idle kubectl exec/attach/port-forward sessions are closed after 5 min.
	conf["streamingConnectionIdleTimeout"] = "5m"
	if c.RestrictOOMScoreAdj {
		// Without CAP_SYS_RESOURCE a negative oom_score_adj cannot be set.
		conf["oomScoreAdj"] = 0
	}
	return conf, nil
}

// kernelDefaults gives the kernel parameters the values the kubelet
// expects and reports whether they all hold, so that the kubelet can run
// with protectKernelDefaults (it then checks them instead of setting them).
func (a *Agent) kernelDefaults() bool {
	r := kernelparams.Ensure(kernelparams.ProcSys)
	if len(r.Set) > 0 {
		a.log.Info("kernel parameters set for the kubelet", "set", r.Set)
	}
	if !r.Hold() {
		a.log.Info("kubelet runs without protectKernelDefaults: kernel parameters differ from what it expects", "differ", r.Differ)
		return false
	}
	return true
}

// taints parses --node-taint values, key[=value]:Effect, into the
// KubeletConfiguration's registerWithTaints.
func taints(specs []string) ([]map[string]string, error) {
	out := []map[string]string{}
	for _, s := range specs {
		kv, effect, _ := strings.Cut(s, ":")
		key, value, _ := strings.Cut(kv, "=")
		switch {
		case key == "":
			return nil, fmt.Errorf("--node-taint %q: no key (want key=value:Effect)", s)
		case effect != "NoSchedule" && effect != "PreferNoSchedule" && effect != "NoExecute":
			return nil, fmt.Errorf("--node-taint %q: the effect must be NoSchedule, PreferNoSchedule or NoExecute (key=value:Effect)", s)
		}
		out = append(out, map[string]string{"key": key, "value": value, "effect": effect})
	}
	return out, nil
}

func (a *Agent) kubeletArgs(configFile string) []string {
	c := a.cfg
	args := []string{
		"--config=" + configFile,
		"--kubeconfig=" + c.Creds.KubeletKubeconfig,
		"--hostname-override=" + c.NodeName,
		"--node-ip=" + c.NodeIP.String(),
		"--root-dir=" + c.KubeletRootDir,
		"--cert-dir=" + filepath.Join(c.agentDir(), "kubelet-pki"),
	}
	if len(c.NodeLabels) > 0 {
		args = append(args, "--node-labels="+strings.Join(c.NodeLabels, ","))
	}
	return args
}

// setupKubelet loads the generated configuration the way the kubelet command
// does, and returns its blocking run function.
func (a *Agent) setupKubelet(ctx context.Context) (func(context.Context) error, error) {
	a.protectKernelDefaults = a.kernelDefaults()
	flags, kc, err := a.kubeletSettings(ctx, filepath.Join(a.cfg.dirs().AgentEtc(), "kubelet.yaml"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(a.cfg.agentDir(), "pod-manifests"), 0o700); err != nil {
		return nil, fmt.Errorf("kubelet static pod directory: %w", err)
	}
	// Feature gates are process-wide: pkg/process set the user's at start-up.
	if err := kubeletconfigvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		return nil, fmt.Errorf("kubelet config: %w", err)
	}
	srv := &kubeletoptions.KubeletServer{KubeletFlags: *flags, KubeletConfiguration: *kc}
	deps, err := kubeletapp.UnsecuredDependencies(ctx, srv, utilfeature.DefaultFeatureGate)
	if err != nil {
		return nil, fmt.Errorf("kubelet dependencies: %w", err)
	}
	return func(ctx context.Context) error {
		return kubeletapp.Run(ctx, srv, deps, utilfeature.DefaultFeatureGate)
	}, nil
}

// kubeletSettings writes the generated KubeletConfiguration to configFile
// and loads it with the kubelet's flags and --kubelet-arg, as the kubelet
// command does. It changes nothing process-wide.
func (a *Agent) kubeletSettings(ctx context.Context, configFile string) (*kubeletoptions.KubeletFlags, *kubeletconfig.KubeletConfiguration, error) {
	conf, err := a.kubeletConfig()
	if err != nil {
		return nil, nil, err
	}
	data, err := yaml.Marshal(conf)
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet config: %w", err)
	}
	if err := pki.WriteFile(configFile, data, 0o600); err != nil {
		return nil, nil, err
	}
	flags := kubeletoptions.NewKubeletFlags()
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	flags.AddFlags(fs)
	if err := fs.Parse(a.kubeletArgs(configFile)); err != nil {
		return nil, nil, fmt.Errorf("kubelet arguments: %w", err)
	}
	if err := kubeletoptions.ValidateKubeletFlags(flags); err != nil {
		// What bramble passes the kubelet: the node's name, IP and labels.
		return nil, nil, fmt.Errorf("kubelet flags from --node-name, --node-ip, --node-label: %w", err)
	}
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, configFile)
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet config %s: %w", configFile, err)
	}
	kc, err := loader.Load(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet config %s: %w", configFile, err)
	}
	if len(a.cfg.KubeletArgs) > 0 {
		// --kubelet-arg overrides both the flags and the generated config, as
		// a command-line flag does for the kubelet itself.
		extra := pflag.NewFlagSet("kubelet-arg", pflag.ContinueOnError)
		extra.SetOutput(io.Discard)
		flags.AddFlags(extra)
		kubeletoptions.AddKubeletConfigFlags(extra, kc)
		var args []string
		for _, arg := range a.cfg.KubeletArgs {
			args = append(args, "--"+strings.TrimPrefix(arg, "--"))
		}
		if err := extra.Parse(args); err != nil {
			return nil, nil, fmt.Errorf("--kubelet-arg: %w", err)
		}
	}
	return flags, kc, nil
}
