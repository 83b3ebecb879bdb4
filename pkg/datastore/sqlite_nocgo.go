//go:build !cgo

package datastore

// The pure-Go driver kine uses for SQLite without cgo (armhf releases).
import _ "modernc.org/sqlite"

const sqliteDriver = "sqlite"
