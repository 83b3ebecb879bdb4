package server

import (
	"log/slog"

	"github.com/bramble-pi/bramble/pkg/secretsenc"
)

// ensureEncryption creates or updates the Secrets encryption config
// (--secrets-encryption) and says whether the apiserver must read it.
func ensureEncryption(cfg Config, p Paths, log *slog.Logger) (bool, error) {
	use, st, err := secretsenc.Ensure(p.EncryptionConfig(), cfg.SecretsEncryption)
	if err != nil {
		return false, err
	}
	switch {
	case use && !st.Enabled:
		log.Warn("secrets encryption is off: Secrets are written in clear text from now on; those already encrypted stay readable",
			"config", p.EncryptionConfig())
	case use:
		log.Debug("secrets encrypted at rest", "provider", secretsenc.Provider, "key", st.WriteKey, "keys", len(st.Keys))
	}
	return use, nil
}
