// Package secretsenc is bramble's encryption of Secrets at rest: the
// apiserver's EncryptionConfiguration file (the keys, mode 0600), its
// states (on, off, a rotation under way) and the key rotation that rewrites
// every Secret through the apiserver without a restart.
//
// The provider is secretbox (XSalsa20-Poly1305, 32-byte keys): authenticated
// like aesgcm but with random 24-byte nonces, so it has no limit on the
// number of writes per key (aesgcm must be rotated every 200k writes), no
// padding oracle (aescbc, which Kubernetes no longer recommends), and it is
// fast in software on the Raspberry Pi 3 and 4, whose CPUs lack the ARMv8
// AES instructions. KMS needs a plugin service: not for a Pi.
package secretsenc

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"sigs.k8s.io/yaml"

	"github.com/bramble-pi/bramble/pkg/atomicfile"
)

// Provider is the encryption provider bramble writes.
const Provider = "secretbox"

// keyPrefix starts every key name bramble generates: key-1, key-2, ...
const keyPrefix = "key-"

// Config is an EncryptionConfiguration for Secrets.
type Config struct {
	c apiserverv1.EncryptionConfiguration
}

// Status is what a Config says, without the keys' secrets.
type Status struct {
	// Enabled: new writes are encrypted (the first provider is not identity).
	Enabled bool
	// WriteKey is the key new writes use (when Enabled), the first key.
	WriteKey string
	// Keys are all key names, the write key first; the others only read.
	Keys []string
}

// New is a configuration with one fresh key, encryption on.
func New(random io.Reader) (*Config, error) {
	c := &Config{c: apiserverv1.EncryptionConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiserver.config.k8s.io/v1", Kind: "EncryptionConfiguration"},
		Resources: []apiserverv1.ResourceConfiguration{{
			Resources: []string{"secrets"},
			// identity last: Secrets written before encryption was on stay
			// readable until they are rewritten (rotate-keys does).
			Providers: []apiserverv1.ProviderConfiguration{
				{Secretbox: &apiserverv1.SecretboxConfiguration{}},
				{Identity: &apiserverv1.IdentityConfiguration{}},
			},
		}},
	}}
	if _, err := c.AddKey(random); err != nil {
		return nil, err
	}
	return c, nil
}

// Load reads a configuration bramble wrote.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse reads a configuration's bytes.
func Parse(data []byte) (*Config, error) {
	c := &Config{}
	if err := yaml.UnmarshalStrict(data, &c.c); err != nil {
		return nil, fmt.Errorf("encryption config: %w", err)
	}
	if _, err := c.secretbox(); err != nil {
		return nil, err
	}
	return c, nil
}

// Marshal is the file's contents.
func (c *Config) Marshal() ([]byte, error) {
	data, err := yaml.Marshal(c.c)
	if err != nil {
		return nil, fmt.Errorf("encryption config: %w", err)
	}
	return data, nil
}

// Save writes the configuration atomically with mode 0600.
func (c *Config) Save(path string) error {
	data, err := c.Marshal()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// providers are the Secrets resource's providers, in order.
func (c *Config) providers() ([]apiserverv1.ProviderConfiguration, error) {
	for _, r := range c.c.Resources {
		if slices.Contains(r.Resources, "secrets") {
			return r.Providers, nil
		}
	}
	return nil, errors.New("encryption config: no entry for secrets")
}

// secretbox is the secretbox provider's configuration.
func (c *Config) secretbox() (*apiserverv1.SecretboxConfiguration, error) {
	ps, err := c.providers()
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if p.Secretbox != nil {
			return p.Secretbox, nil
		}
	}
	return nil, errors.New("encryption config: no secretbox provider for secrets (bramble manages only its own secretbox keys)")
}

// Status says whether encryption is on and which keys there are.
func (c *Config) Status() Status {
	var s Status
	ps, err := c.providers()
	if err != nil || len(ps) == 0 {
		return s
	}
	sb, _ := c.secretbox()
	for _, k := range sb.Keys {
		s.Keys = append(s.Keys, k.Name)
	}
	s.Enabled = ps[0].Identity == nil
	if s.Enabled && ps[0].Secretbox != nil && len(s.Keys) > 0 {
		s.WriteKey = s.Keys[0]
	}
	return s
}

// SetEnabled puts identity last (on: secretbox writes) or first (off: new
// writes in clear text, encrypted Secrets still readable). It says whether
// anything changed.
func (c *Config) SetEnabled(on bool) bool {
	for i, r := range c.c.Resources {
		if !slices.Contains(r.Resources, "secrets") {
			continue
		}
		var identity, others []apiserverv1.ProviderConfiguration
		for _, p := range r.Providers {
			if p.Identity != nil {
				identity = append(identity, p)
			} else {
				others = append(others, p)
			}
		}
		if len(identity) == 0 {
			identity = []apiserverv1.ProviderConfiguration{{Identity: &apiserverv1.IdentityConfiguration{}}}
		}
		want := append(slices.Clone(others), identity...)
		if !on {
			want = append(slices.Clone(identity), others...)
		}
		if c.Status().Enabled == on && len(want) == len(r.Providers) {
			return false
		}
		c.c.Resources[i].Providers = want
		return true
	}
	return false
}

// AddKey adds a fresh 32-byte key as the write key; the others stay as read
// keys, so what they encrypted stays readable. It returns the key's name.
func (c *Config) AddKey(random io.Reader) (string, error) {
	sb, err := c.secretbox()
	if err != nil {
		return "", err
	}
	secret := make([]byte, 32)
	if _, err := io.ReadFull(random, secret); err != nil {
		return "", fmt.Errorf("generate an encryption key: %w", err)
	}
	next := 1
	for _, k := range sb.Keys {
		if n, err := strconv.Atoi(strings.TrimPrefix(k.Name, keyPrefix)); err == nil && n >= next {
			next = n + 1
		}
	}
	name := keyPrefix + strconv.Itoa(next)
	sb.Keys = append([]apiserverv1.Key{{Name: name, Secret: base64.StdEncoding.EncodeToString(secret)}}, sb.Keys...)
	return name, nil
}

// DropReadKeys removes every key but the write key (once nothing is
// encrypted with them any more).
func (c *Config) DropReadKeys() error {
	sb, err := c.secretbox()
	if err != nil {
		return err
	}
	if len(sb.Keys) > 1 {
		sb.Keys = sb.Keys[:1]
	}
	return nil
}

// Ensure makes the file at path agree with on: with encryption on, it is
// created with a fresh key the first time; off, an existing file is kept
// with identity first (what was encrypted stays readable). It returns
// whether the apiserver must be given the file, and its status.
func Ensure(path string, on bool) (use bool, s Status, err error) {
	c, err := Load(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && !on:
		return false, s, nil
	case errors.Is(err, os.ErrNotExist):
		if c, err = New(rand.Reader); err != nil {
			return false, s, err
		}
		if err := c.Save(path); err != nil {
			return false, s, err
		}
		return true, c.Status(), nil
	case err != nil:
		return false, s, fmt.Errorf("%s: %w", path, err)
	}
	if c.SetEnabled(on) {
		if err := c.Save(path); err != nil {
			return false, s, err
		}
	}
	// A file a user or an older bramble wrote with another mode.
	if err := os.Chmod(path, 0o600); err != nil {
		return false, s, fmt.Errorf("%s: %w", path, err)
	}
	return true, c.Status(), nil
}

// StoredPrefix is how a value encrypted with the named key starts in the
// datastore.
func StoredPrefix(key string) string { return "k8s:enc:" + Provider + ":v1:" + key + ":" }
