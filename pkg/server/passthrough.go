package server

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
	apioptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/bramble-pi/bramble/pkg/extraargs"
)

func (c Config) apiServerExtra() extraargs.Args {
	return extraargs.Args{Flag: "kube-apiserver-arg", Component: "kube-apiserver", Values: c.APIServerArgs}
}

func (c Config) schedulerExtra() extraargs.Args {
	return extraargs.Args{Flag: "kube-scheduler-arg", Component: "kube-scheduler", Values: c.SchedulerArgs}
}

func (c Config) controllerExtra() extraargs.Args {
	return extraargs.Args{Flag: "kube-controller-manager-arg", Component: "kube-controller-manager", Values: c.ControllerArgs}
}

// checkArgs parses each control-plane component's arguments, the user's
// included, as the component will at start, so an unknown flag or a bad
// value names the bramble flag and the component before anything runs.
func (cp *ControlPlane) checkArgs() error {
	checks := []struct {
		extra extraargs.Args
		sets  func() (cliflag.NamedFlagSets, error)
		args  func() []string
	}{
		{cp.cfg.apiServerExtra(), func() (cliflag.NamedFlagSets, error) { return apioptions.NewServerRunOptions().Flags(), nil },
			// kine's endpoint is known once it runs; any URL parses.
			func() []string { return cp.apiServerArgs([]string{"unix://kine.sock"}) }},
		{cp.cfg.schedulerExtra(), func() (cliflag.NamedFlagSets, error) { return *schedoptions.NewOptions().Flags, nil }, cp.schedulerArgs},
		{cp.cfg.controllerExtra(), func() (cliflag.NamedFlagSets, error) {
			s, err := kcmoptions.NewKubeControllerManagerOptions()
			if err != nil {
				return cliflag.NamedFlagSets{}, err
			}
			return s.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()), nil
		}, cp.controllerManagerArgs},
	}
	for _, c := range checks {
		if len(c.extra.Values) == 0 {
			continue // bramble's own arguments are tested
		}
		sets, err := c.sets()
		if err != nil {
			return fmt.Errorf("%s options: %w", c.extra.Component, err)
		}
		fs := flagSet(c.extra.Component, sets)
		if err := c.extra.Check(fs, nil); err != nil {
			return err
		}
		if err := fs.Parse(c.args()); err != nil {
			return fmt.Errorf("--%s: %s arguments: %w", c.extra.Flag, c.extra.Component, err)
		}
	}
	return nil
}

// flagSet is one flag set with every flag of a component's named sets.
func flagSet(name string, sets cliflag.NamedFlagSets) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range sets.FlagSets {
		fs.AddFlagSet(f)
	}
	return fs
}
