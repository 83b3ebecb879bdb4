package cli

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/secretsenc"
)

func secretsEncryptCommand() *cli.Command {
	return &cli.Command{
		Name:  "secrets-encrypt",
		Usage: "show the encryption of Secrets at rest, rotate its key (on the server)",
		Subcommands: []*cli.Command{{
			Name:   "status",
			Usage:  "encryption on or off, the keys, whether the apiserver uses the current file, and how the stored Secrets are encrypted",
			Flags:  serverToolFlags(),
			Before: applyConfigFile,
			Action: secretsEncryptStatus,
		}, {
			Name:   "rotate-keys",
			Usage:  "add a new key, re-encrypt every Secret with it through the apiserver (no restart), drop the old key",
			Flags:  serverToolFlags(),
			Before: applyConfigFile,
			Action: func(c *cli.Context) error {
				d := layout.New(c.String("data-dir"))
				cs, _, err := adminClient(c.String("data-dir"))
				if err != nil {
					return err
				}
				step := func(s string) { fmt.Fprintln(c.App.Writer, s) }
				if err := secretsenc.RotateKeys(c.Context, d.EncryptionConfig(), cs, step); err != nil {
					return err
				}
				return secretsEncryptStatus(c)
			},
		}},
	}
}

func secretsEncryptStatus(c *cli.Context) error {
	d := layout.New(c.String("data-dir"))
	path := d.EncryptionConfig()
	w := c.App.Writer
	cfg, err := secretsenc.Load(path)
	if err != nil {
		if layout.IsNotExist(err) {
			fmt.Fprintf(w, "Encryption: off (no %s; the server runs with --secrets-encryption=false)\n", path)
			return nil
		}
		return err
	}
	st := cfg.Status()
	if st.Enabled {
		fmt.Fprintf(w, "Encryption: on (%s)\nWrite key: %s\n", secretsenc.Provider, st.WriteKey)
	} else {
		fmt.Fprintln(w, "Encryption: off (--secrets-encryption=false): new writes in clear text, the keys still read")
	}
	fmt.Fprintf(w, "Keys: %d (%s)\n", len(st.Keys), strings.Join(st.Keys, ", "))
	if len(st.Keys) > 1 {
		fmt.Fprintln(w, "Note: more than one key: a rotation did not finish; run `bramble secrets-encrypt rotate-keys` again")
	}
	fileHash, err := secretsenc.FileHash(path)
	if err != nil {
		return err
	}
	if cs, _, err := adminClient(c.String("data-dir")); err != nil {
		fmt.Fprintf(w, "Apiserver: unknown (%v)\n", err)
	} else if active, err := secretsenc.ActiveHash(c.Context, cs); err != nil {
		fmt.Fprintf(w, "Apiserver: unknown (%v)\n", err)
	} else if active == fileHash {
		fmt.Fprintln(w, "Apiserver: uses this file")
	} else {
		fmt.Fprintln(w, "Apiserver: still uses an older version of this file (it re-reads it every few seconds)")
	}
	db := filepath.Join(d.DB(), "state.db")
	stored, err := secretsenc.Stored(db)
	if err != nil {
		fmt.Fprintf(w, "Stored Secrets: unknown (%v; only the SQLite datastore is inspected)\n", err)
		return nil
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(stored)) {
		parts = append(parts, fmt.Sprintf("%d %s", stored[k], k))
	}
	fmt.Fprintf(w, "Stored Secrets: %s\n", strings.Join(parts, ", "))
	if want := secretsenc.Provider + ":" + st.WriteKey; st.Enabled && stored[want] != sum(stored) {
		fmt.Fprintf(w, "Not all Secrets are stored with the write key %s: `bramble secrets-encrypt rotate-keys` re-encrypts them\n", st.WriteKey)
	}
	return nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
