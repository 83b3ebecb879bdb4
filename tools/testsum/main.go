// Command testsum runs `go test` with -json and prints what a plain `go test`
// prints (each package's result line, the output of every failed test, build
// errors), then one line counting the tests that passed, failed and were
// skipped, and the reason of each skip, so a skip is never silent.
//
//	go run ./tools/testsum go test -count=1 ./pkg/...
//
// It exits with go test's exit status.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output events
	Test       string
	Output     string
	Elapsed    float64 // seconds, on pass and fail
}

// slowShown is how many of the slowest top-level tests finish lists (the
// suite must stay within CI's time: this says where it goes).
const slowShown = 8

// timing is a finished top-level test's wall time.
type timing struct {
	name    string
	seconds float64
}

func main() {
	args := os.Args[1:]
	if len(args) < 2 || args[0] != "go" || args[1] != "test" {
		fmt.Fprintln(os.Stderr, "usage: testsum go test [flags] [packages]")
		os.Exit(2)
	}
	cmd := exec.Command("go", append([]string{"test", "-json"}, args[2:]...)...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testsum: %v\n", err)
		os.Exit(2)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "testsum: start go test: %v\n", err)
		os.Exit(2)
	}
	s := newSummary(os.Stdout)
	readErr := s.read(out)
	err = cmd.Wait()
	s.finish()
	if readErr != nil {
		fmt.Fprintf(os.Stderr, "testsum: %v\n", readErr)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		os.Exit(exit.ExitCode())
	case err != nil || readErr != nil:
		os.Exit(2)
	}
}

// summary follows the events of one go test run.
type summary struct {
	w              io.Writer
	output         map[string][]string // buffered output of running tests
	passed, failed int
	skipped        []string // "pkg TestName: reason"
	failedNames    []string
	timings        []timing // top-level tests that took a second or more
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, output: map[string][]string{}}
}

// read handles events until r ends; a line that is not JSON (a vet or
// build message) is printed as it is.
func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.handle(e)
	}
	return sc.Err()
}

func (s *summary) handle(e event) {
	key := e.Package + " " + e.Test
	switch {
	case e.Action == "build-output":
		fmt.Fprint(s.w, e.Output)
	case e.Test == "":
		// Package level: "ok  pkg 1.2s", "FAIL pkg", panics, timeouts.
		if e.Action == "output" && strings.TrimSpace(e.Output) != "PASS" {
			fmt.Fprint(s.w, e.Output)
		}
	case e.Action == "output":
		s.output[key] = append(s.output[key], e.Output)
	case e.Action == "skip":
		s.skipped = append(s.skipped, e.Package+" "+e.Test+": "+skipReason(s.output[key]))
		delete(s.output, key)
	case (e.Action == "pass" || e.Action == "fail") && !strings.Contains(e.Test, "/") && e.Elapsed >= 1:
		s.timings = append(s.timings, timing{e.Package + " " + e.Test, e.Elapsed})
		fallthrough
	case e.Action == "pass" || e.Action == "fail":
		s.result(e, key)
	}
}

func (s *summary) result(e event, key string) {
	switch e.Action {
	case "pass":
		s.passed++
		delete(s.output, key)
	case "fail":
		s.failed++
		s.failedNames = append(s.failedNames, e.Package+" "+e.Test)
		fmt.Fprint(s.w, strings.Join(s.output[key], ""))
		delete(s.output, key)
	}
}

// skipReason is the message t.Skip logged: the output lines between
// "=== RUN" and "--- SKIP", without the file:line prefix.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		if _, rest, ok := strings.Cut(t, ".go:"); ok {
			if _, m, ok := strings.Cut(rest, ": "); ok {
				t = m
			}
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return msg[len(msg)-1]
}

// finish prints the slowest tests, the skips, the failed tests and the
// counts.
func (s *summary) finish() {
	slices.SortFunc(s.timings, func(a, b timing) int { return int(b.seconds*1000) - int(a.seconds*1000) })
	for _, t := range s.timings[:min(slowShown, len(s.timings))] {
		fmt.Fprintf(s.w, "SLOW %6.1fs %s\n", t.seconds, t.name)
	}
	slices.Sort(s.skipped)
	for _, sk := range s.skipped {
		fmt.Fprintf(s.w, "SKIP %s\n", sk)
	}
	for _, f := range s.failedNames {
		fmt.Fprintf(s.w, "FAILED %s\n", f)
	}
	fmt.Fprintf(s.w, "tests: %d passed, %d failed, %d skipped\n", s.passed, s.failed, len(s.skipped))
}
