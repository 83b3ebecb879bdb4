// Package mountinfo parses the kernel's mount table, /proc/<pid>/mountinfo
// (see proc(5)): what pkg/hostcheck and pkg/mountns read to tell whether /
// is a shared mount and where the cgroup hierarchies are.
package mountinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Mount is one line of the mount table.
type Mount struct {
	MountPoint string
	// Optional are the optional fields: "shared:1", "master:2",
	// "propagate_from:3", "unbindable".
	Optional     []string
	FSType       string
	Source       string
	SuperOptions string
}

// Shared reports whether the mount is in a shared peer group.
func (m Mount) Shared() bool {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// Read parses this process's mount table, /proc/self/mountinfo.
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	mounts, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("parse /proc/self/mountinfo: %w", err)
	}
	return mounts, nil
}

// Parse parses the mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// fields: id, parent id, major:minor, root, mount point, mount options,
// zero or more optional fields, "-", fs type, source, super options. Paths
// have the kernel's \ooo escapes undone.
func Parse(b []byte) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Fields(line)
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 7 || sep < 0 || len(fields) < sep+3 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		m := Mount{
			MountPoint: unescapeOctal(fields[4]),
			Optional:   fields[6:sep],
			FSType:     fields[sep+1],
			Source:     unescapeOctal(fields[sep+2]),
		}
		if len(fields) > sep+3 {
			m.SuperOptions = fields[sep+3]
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Find returns the mount visible at mountPoint: the last one listed (a
// later mount on the same point hides the earlier ones), or nil.
func Find(mounts []Mount, mountPoint string) *Mount {
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == mountPoint {
			return &mounts[i]
		}
	}
	return nil
}

// unescapeOctal undoes the kernel's \ooo escaping of space, tab, newline
// and backslash in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
