// Package containerd runs containerd v2 as a child process of bramble (its
// own small executable from the helper bundle, built from cmd/containerd),
// with a generated configuration, and reports when its CRI service answers.
package containerd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Containerd is the containerd component.
type Containerd struct {
	cfg    Config
	log    *slog.Logger
	cmd    *exec.Cmd
	exited chan error
	done   chan struct{}
}

// New returns the containerd component.
func New(cfg Config, log *slog.Logger) *Containerd {
	return &Containerd{cfg: cfg, log: log, exited: make(chan error, 1), done: make(chan struct{})}
}

// Name implements supervisor.Component.
func (c *Containerd) Name() string { return "containerd" }

// Init creates directories, picks the snapshotter and writes the config.
func (c *Containerd) Init(context.Context) error {
	for _, d := range []string{c.cfg.Root, c.cfg.State, c.cfg.ConfigDir, c.cfg.CNIConfDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if c.cfg.Snapshotter == "" {
		c.cfg.Snapshotter = "overlayfs"
		if err := overlayWorks(c.cfg.Root); err != nil {
			c.log.Warn("overlayfs does not work here, using the native snapshotter (slower, more disk)", "err", err)
			c.cfg.Snapshotter = "native"
		}
	}
	custom, err := WriteConfig(c.cfg)
	if err != nil {
		return err
	}
	if custom && c.cfg.Mirror != nil && !configHasRegistryPath(c.cfg.ConfigFile()) {
		c.log.Warn("config.toml.tmpl sets no registry config_path: this node cannot pull images through the server; add `config_path = \"{{.RegistryConfigPath}}\"` to the [plugins.\"io.containerd.cri.v1.images\".registry] table",
			"template", c.cfg.TemplateFile())
	}
	return nil
}

// configHasRegistryPath says whether the rendered config mentions the
// registry host configuration directory.
func configHasRegistryPath(path string) bool {
	data, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(data), "config_path")
}

// Snapshotter is the snapshotter in use (known after Init).
func (c *Containerd) Snapshotter() string { return c.cfg.Snapshotter }

// containerd.log's size cap: logMaxMB megabytes, then rotated, logBackups
// old files kept.
const (
	logMaxMB   = 10
	logBackups = 2
)

// Start launches the helper bundle's containerd.
func (c *Containerd) Start(context.Context) error {
	bin := filepath.Join(c.cfg.BinDir, "containerd")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("containerd executable (from the helper bundle): %w", err)
	}
	// Size-capped on an SD card: 10 MB, then rotated, two old files kept
	// (containerd.log.<time>); new files 0600.
	logf := &lumberjack.Logger{Filename: c.cfg.LogFile(), MaxSize: logMaxMB, MaxBackups: logBackups}
	c.cmd = exec.Command(bin, c.cfg.commandLine()...)
	c.cmd.Env = append(os.Environ(), "PATH="+c.cfg.BinDir+":"+os.Getenv("PATH"))
	if os.Getenv("GOGC") == "" {
		// The collector setting bramble uses for itself (pkg/process): a
		// smaller idle heap for containerd and the shims it starts.
		c.cmd.Env = append(c.cmd.Env, "GOGC=50")
	}
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// containerd dies with bramble; the shims (and so the pods) survive both.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start containerd: %w", err)
	}
	c.log.Debug("containerd started", "pid", c.cmd.Process.Pid, "log", c.cfg.LogFile())
	go func() {
		err := c.cmd.Wait()
		logf.Close()
		if err == nil {
			err = fmt.Errorf("containerd exited")
		}
		c.exited <- fmt.Errorf("%w (its log: %s)", err, c.cfg.LogFile())
		close(c.done)
	}()
	return nil
}

// Ready waits until containerd serves its API with the CRI plugin loaded.
func (c *Containerd) Ready(ctx context.Context) error {
	var last error
	for {
		last = c.ping(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd not ready: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Containerd) ping(ctx context.Context) error {
	if _, err := os.Stat(c.cfg.Socket()); err != nil {
		return err
	}
	cli, err := client.New(c.cfg.Socket(), client.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	defer cli.Close()
	serving, err := cli.IsServing(ctx)
	if err != nil || !serving {
		return fmt.Errorf("not serving: %v", err)
	}
	return nil
}

// Exited reports containerd's exit.
func (c *Containerd) Exited() <-chan error { return c.exited }

// Stop sends SIGTERM and waits; the shims keep running.
func (c *Containerd) Stop(ctx context.Context) error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		return fmt.Errorf("containerd killed after stop deadline: %w", ctx.Err())
	}
}

// overlayWorks tries an overlay mount inside dir.
func overlayWorks(dir string) error {
	tmp, err := os.MkdirTemp(dir, ".overlay-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o700); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"))
	if err := unix.Mount("overlay", filepath.Join(tmp, "merged"), "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay mount: %w", err)
	}
	return unix.Unmount(filepath.Join(tmp, "merged"), 0)
}
