package secretsenc

import (
	"database/sql"
	"fmt"
	"os"
	"strings"

	_ "github.com/mattn/go-sqlite3" // kine's SQLite driver
)

// ClearText is the Stored key of Secrets stored without encryption.
const ClearText = "(clear text)"

// Stored counts the Secrets in a kine SQLite database (state.db) by the key
// their current value is encrypted with ("secretbox:key-2"), ClearText for
// none. It reads the file only (read-only, safe while the server runs).
func Stored(dbFile string) (map[string]int, error) {
	if _, err := os.Stat(dbFile); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite3", "file:"+dbFile+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dbFile, err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT kv.value FROM kine AS kv
		JOIN (SELECT MAX(id) AS id FROM kine WHERE name LIKE '/registry/secrets/%' GROUP BY name) AS latest ON kv.id = latest.id
		WHERE kv.deleted = 0`)
	if err != nil {
		return nil, fmt.Errorf("read Secrets from %s: %w", dbFile, err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var value []byte
		if err := rows.Scan(&value); err != nil {
			return nil, fmt.Errorf("read Secrets from %s: %w", dbFile, err)
		}
		out[StoredKey(value)]++
	}
	return out, rows.Err()
}

// StoredKey is the provider:key a stored value is encrypted with, from its
// k8s:enc:<provider>:v1:<key>: prefix, or ClearText.
func StoredKey(value []byte) string {
	rest, ok := strings.CutPrefix(string(value[:min(len(value), 256)]), "k8s:enc:")
	if !ok {
		return ClearText
	}
	parts := strings.SplitN(rest, ":", 4)
	if len(parts) < 4 {
		return ClearText
	}
	return parts[0] + ":" + parts[2]
}
