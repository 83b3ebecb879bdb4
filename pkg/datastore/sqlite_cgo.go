//go:build cgo

package datastore

// The driver kine uses for SQLite when built with cgo.
import _ "github.com/mattn/go-sqlite3"

const sqliteDriver = "sqlite3"
