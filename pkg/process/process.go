// Package process makes the few settings that are process-wide, because
// bramble runs several Kubernetes components in one process and their
// libraries read globals. They are decided once, at start-up, before any
// component starts, and nowhere else:
//
//   - Feature gates: the apiserver, scheduler, controller-manager, kubelet
//     and kube-proxy all read k8s.io/apiserver's DefaultFeatureGate. Gates a
//     user gives the kubelet (--kubelet-arg feature-gates=...) therefore
//     apply to every component; Setup says so in a warning instead of
//     letting the kubelet change the apiserver silently half-way through
//     start-up.
//   - API warnings: client-go's default warning handler is set to drop
//     warnings, so the in-process components' own clients do not log
//     deprecation notices. A client that acts for the user (the deploy
//     controller applying manifests) sets its own handler on its
//     rest.Config, which wins over the default.
//   - NODE_NAME: flannel's kube subnet manager reads the node's name from
//     the environment; one process runs one node.
//   - WIREGUARD_KEY_FILE: where flannel's WireGuard backend keeps the
//     node's private key (it reads the path from the environment).
//   - The Go garbage collector (GOGC, the soft memory limit): runtime.go.
package process

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/rest"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/featuregate"
)

// Settings are the process-wide settings.
type Settings struct {
	// NodeName is the node this process runs, if any.
	NodeName string
	// KubeletArgs are the user's --kubelet-arg values (name=value); only
	// feature-gates=... is process-wide.
	KubeletArgs []string
	// WireGuardKeyFile is the node's WireGuard private key (flannel's
	// wireguard-native backend makes it, 0400).
	WireGuardKeyFile string
}

// Setup applies the settings. Call it once, before starting components.
func Setup(s Settings, log *slog.Logger) error {
	TuneRuntime(log)
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	gates, err := FeatureGates(s.KubeletArgs)
	if err != nil {
		return err
	}
	defaults := defaultGates(gates)
	known := utilfeature.DefaultMutableFeatureGate.GetAll()
	maps.DeleteFunc(defaults, func(name string, _ bool) bool {
		_, ok := known[featuregate.Feature(name)]
		return !ok // a component this binary does not link
	})
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(defaults); err != nil {
		return fmt.Errorf("bramble's default feature gates: %w", err)
	}
	if len(gates) > 0 {
		if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(gates); err != nil {
			return fmt.Errorf("--kubelet-arg feature-gates: %w", err)
		}
		names := slices.Sorted(maps.Keys(gates))
		log.Warn("feature gates from --kubelet-arg apply to every Kubernetes component of this process (apiserver, scheduler, controller-manager, kubelet, kube-proxy)",
			"gates", strings.Join(names, ","))
	}
	if s.NodeName != "" {
		if err := os.Setenv("NODE_NAME", s.NodeName); err != nil {
			return fmt.Errorf("set NODE_NAME: %w", err)
		}
	}
	if s.WireGuardKeyFile != "" {
		if err := os.Setenv("WIREGUARD_KEY_FILE", s.WireGuardKeyFile); err != nil {
			return fmt.Errorf("set WIREGUARD_KEY_FILE: %w", err)
		}
	}
	return nil
}

// FeatureGates collects the feature gates of feature-gates=A=true,B=false
// kubelet arguments (later ones win, as with repeated kubelet flags).
func FeatureGates(kubeletArgs []string) (map[string]bool, error) {
	gates := map[string]bool{}
	for _, arg := range kubeletArgs {
		name, value, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if name != "feature-gates" {
			continue
		}
		m := map[string]bool{}
		if err := cliflag.NewMapStringBool(&m).Set(value); err != nil {
			return nil, fmt.Errorf("--kubelet-arg %s: %w", arg, err)
		}
		maps.Copy(gates, m)
	}
	return gates, nil
}

// brambleGates are the feature gates bramble turns off by default; a
// --kubelet-arg feature-gates=... that names one wins.
//
// APIServerIdentity: each apiserver renews a Lease naming itself every 10 s,
// for features a single server does not use (the storage version API, and
// UnknownVersionInteroperabilityProxy, the proxy between apiservers of
// different versions, which depends on it and goes off with it): six
// datastore writes a minute on an SD card.
//
// ControllerManagerReleaseLeaderElectionLockOnExit (on): with leader
// election (several servers), kube-controller-manager stopped by bramble
// otherwise ends the whole process at once (os.Exit(1), "leaderelection
// lost/stopped"), before the apiserver and etcd are stopped; with it, it
// releases its lease and returns (a lost lease still ends the component,
// and so bramble).
var brambleGates = map[string]bool{"APIServerIdentity": false, "UnknownVersionInteroperabilityProxy": false,
	"ControllerManagerReleaseLeaderElectionLockOnExit": true}

// defaultGates are bramble's gates the user did not set.
func defaultGates(user map[string]bool) map[string]bool {
	out := map[string]bool{}
	for name, on := range brambleGates {
		if _, set := user[name]; !set {
			out[name] = on
		}
	}
	return out
}
