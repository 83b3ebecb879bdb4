package secretsenc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// reloadMetric is the apiserver metric naming the hash of the encryption
// config it uses; it re-reads the file every ReloadPoll.
const reloadMetric = "apiserver_encryption_config_controller_last_config_info"

// configHashLabel is the metric's hash label (not apiserver_id_hash).
var configHashLabel = regexp.MustCompile(`[{,]hash="([^"]+)"`)

// ReloadPoll is how often bramble's apiserver re-reads the encryption config
// file (upstream polls every minute).
const ReloadPoll = 5 * time.Second

// ReloadTimeout bounds the wait for the apiserver to pick up a changed file
// (it polls it every ReloadPoll).
const ReloadTimeout = 3 * time.Minute

// RotateKeys replaces the write key without a restart: a new key goes first
// (the old ones still read), the apiserver reloads the file, every Secret is
// rewritten with the new key, then the old keys are dropped and the
// apiserver reloads again. An interrupted rotation is finished by running it
// again. step reports progress (never a key).
func RotateKeys(ctx context.Context, path string, cs kubernetes.Interface, step func(string)) error {
	c, err := Load(path)
	if err != nil {
		return err
	}
	if !c.Status().Enabled {
		return fmt.Errorf("secrets encryption is off (--secrets-encryption=false): turn it on before rotating keys")
	}
	name, err := c.AddKey(rand.Reader)
	if err != nil {
		return err
	}
	if err := saveAndWait(ctx, c, path, cs, fmt.Sprintf("new write key %s", name), step); err != nil {
		return err
	}
	n, err := RewriteSecrets(ctx, cs)
	if err != nil {
		return err
	}
	step(fmt.Sprintf("rewrote %d Secrets with key %s", n, name))
	if err := c.DropReadKeys(); err != nil {
		return err
	}
	return saveAndWait(ctx, c, path, cs, "old keys dropped", step)
}

// saveAndWait writes c and waits until the apiserver uses it.
func saveAndWait(ctx context.Context, c *Config, path string, cs kubernetes.Interface, what string, step func(string)) error {
	data, err := c.Marshal()
	if err != nil {
		return err
	}
	if err := c.Save(path); err != nil {
		return err
	}
	step(what + ": waiting for the apiserver to reload " + path + " (a few seconds)")
	return WaitForConfig(ctx, cs, data)
}

// Hash is how the apiserver names the configuration data in its metrics.
func Hash(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }

// WaitForConfig waits until the apiserver reports it uses data.
func WaitForConfig(ctx context.Context, cs kubernetes.Interface, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, ReloadTimeout)
	defer cancel()
	want := Hash(data)
	for {
		got, err := ActiveHash(ctx, cs)
		if err == nil && got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("the apiserver still uses configuration %s", got)
			}
			return fmt.Errorf("apiserver did not load the new encryption config (%s) within %s: %w", want, ReloadTimeout, err)
		case <-time.After(2 * time.Second):
		}
	}
}

// ActiveHash is the hash of the encryption configuration the apiserver
// uses, from its metrics.
func ActiveHash(ctx context.Context, cs kubernetes.Interface) (string, error) {
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("apiserver metrics: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, reloadMetric+"{") {
			continue
		}
		if m := configHashLabel.FindStringSubmatch(line); m != nil {
			return m[1], nil
		}
	}
	return "", fmt.Errorf("apiserver metrics: no %s (is --encryption-provider-config set?)", reloadMetric)
}

// RewriteSecrets writes every Secret back unchanged, so the apiserver
// stores it with its current write key (a Secret already stored with it is
// not written again). It returns how many Secrets there were.
func RewriteSecrets(ctx context.Context, cs kubernetes.Interface) (int, error) {
	n := 0
	opts := metav1.ListOptions{Limit: 100}
	for {
		list, err := cs.CoreV1().Secrets("").List(ctx, opts)
		if err != nil {
			return n, fmt.Errorf("list Secrets: %w", err)
		}
		for i := range list.Items {
			if err := rewrite(ctx, cs, &list.Items[i]); err != nil {
				return n, err
			}
			n++
		}
		if list.Continue == "" {
			return n, nil
		}
		opts.Continue = list.Continue
	}
}

// rewrite writes one Secret back, re-reading it after a conflict.
func rewrite(ctx context.Context, cs kubernetes.Interface, s *corev1.Secret) error {
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			fresh, err := cs.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s = fresh
		}
		first = false
		_, err := cs.CoreV1().Secrets(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile: nothing left to re-encrypt
	}
	if err != nil {
		return fmt.Errorf("rewrite Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// FileHash is the hash of the configuration file as it is on disk.
func FileHash(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return Hash(data), nil
}
