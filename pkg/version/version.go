// Package version holds the build's version strings, set with -ldflags -X.
package version

// Set at build time by the Makefile.
var (
	Version    = "v0.0.0-dev"
	GitCommit  = "unknown"
	Kubernetes = "v1.37.1"
)

// String is the one-line version shown by `bramble --version`.
func String() string {
	return Version + " (kubernetes " + Kubernetes + ", commit " + GitCommit + ")"
}
