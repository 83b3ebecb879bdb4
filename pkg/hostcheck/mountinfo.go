package hostcheck

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// mountInfo is one line of /proc/<pid>/mountinfo (see proc(5)).
type mountInfo struct {
	mountPoint   string
	optional     []string // "shared:1", "master:2", "propagate_from:3", "unbindable"
	fsType       string
	source       string
	superOptions string
}

// shared reports whether the mount is in a shared peer group.
func (m mountInfo) shared() bool {
	for _, o := range m.optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// parseMountinfo parses the mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// fields: id, parent id, major:minor, root, mount point, mount options,
// zero or more optional fields, "-", fs type, source, super options.
func parseMountinfo(b []byte) ([]mountInfo, error) {
	var out []mountInfo
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
		m := mountInfo{
			mountPoint: unescapeOctal(fields[4]),
			optional:   fields[6:sep],
			fsType:     fields[sep+1],
			source:     unescapeOctal(fields[sep+2]),
		}
		if len(fields) > sep+3 {
			m.superOptions = fields[sep+3]
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// findMount returns the mount visible at mountPoint: the last one listed
// (a later mount on the same point hides the earlier ones), or nil.
func findMount(mounts []mountInfo, mountPoint string) *mountInfo {
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].mountPoint == mountPoint {
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
