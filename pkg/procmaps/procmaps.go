// Package procmaps reads a process's memory mappings (/proc/PID/maps,
// proc(5)).
package procmaps

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mapping is one line of a maps file.
type Mapping struct {
	Start, End uint64
	// Perms is the permission field, e.g. "r-xp".
	Perms string
	// Path is the mapped file, a pseudo-path such as "[heap]", or empty.
	Path string
}

// Writable says whether the mapping may be written.
func (m Mapping) Writable() bool { return strings.Contains(m.Perms, "w") }

// Read parses the maps file of a process (pid 0: this process).
func Read(pid int) ([]Mapping, error) {
	path := "/proc/self/maps"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/maps", pid)
	}
	return ReadFile(path)
}

// ReadFile parses a maps file.
func ReadFile(path string) ([]Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mappings: %w", err)
	}
	defer f.Close()
	var out []Mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("mappings %s: bad range %q", path, fields[0])
		}
		m := Mapping{Start: start, End: end, Perms: fields[1]}
		if len(fields) >= 6 {
			m.Path = fields[5]
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mappings %s: %w", path, err)
	}
	return out, nil
}
