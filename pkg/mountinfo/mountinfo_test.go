package mountinfo

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  []Mount
		isErr bool
	}{
		{
			name: "escapes, shared and master",
			in:   `40 27 0:50 / /mnt/with\040space rw,relatime shared:7 master:3 - tmpfs my\134dev rw` + "\n",
			want: []Mount{{MountPoint: "/mnt/with space", Optional: []string{"shared:7", "master:3"}, FSType: "tmpfs", Source: `my\dev`, SuperOptions: "rw"}},
		},
		{
			name: "no optional fields, blank lines skipped",
			in:   "\n25 1 8:1 / / rw - ext4 /dev/sda1 rw,errors=remount-ro\n\n",
			want: []Mount{{MountPoint: "/", Optional: []string{}, FSType: "ext4", Source: "/dev/sda1", SuperOptions: "rw,errors=remount-ro"}},
		},
		{
			name: "cgroup v1 hierarchy",
			in:   "33 26 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory\n",
			want: []Mount{{MountPoint: "/sys/fs/cgroup/memory", Optional: []string{"shared:14"}, FSType: "cgroup", Source: "cgroup", SuperOptions: "rw,memory"}},
		},
		{
			name: "no super options",
			in:   "33 26 0:29 / /x rw - nsfs nsfs\n",
			want: []Mount{{MountPoint: "/x", Optional: []string{}, FSType: "nsfs", Source: "nsfs"}},
		},
		{name: "garbage", in: "garbage line\n", isErr: true},
		{name: "no separator", in: "25 1 8:1 / / rw shared:1 ext4 /dev/sda1 rw\n", isErr: true},
		{name: "separator without fs type and source", in: "25 1 8:1 / / rw -\n", isErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.isErr {
				if err == nil {
					t.Fatalf("Parse(%q) = %+v, want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, func(a, b Mount) bool {
				return a.MountPoint == b.MountPoint && slices.Equal(a.Optional, b.Optional) &&
					a.FSType == b.FSType && a.Source == b.Source && a.SuperOptions == b.SuperOptions
			}) {
				t.Fatalf("Parse(%q) =\n  %+v\nwant\n  %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSharedAndFind(t *testing.T) {
	mounts, err := Parse([]byte(`1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
2 1 0:5 / /run rw master:3 - tmpfs tmpfs rw
3 1 0:6 / / rw - ext4 /dev/sda2 rw
`))
	if err != nil {
		t.Fatal(err)
	}
	if !mounts[0].Shared() || mounts[1].Shared() || mounts[2].Shared() {
		t.Errorf("Shared: %v %v %v", mounts[0].Shared(), mounts[1].Shared(), mounts[2].Shared())
	}
	// The later mount on / hides the first one.
	if m := Find(mounts, "/"); m == nil || m.Source != "/dev/sda2" {
		t.Errorf("Find(/) = %+v", m)
	}
	if m := Find(mounts, "/nowhere"); m != nil {
		t.Errorf("Find(/nowhere) = %+v", m)
	}
}

// TestRead parses this machine's own mount table, which always has /.
func TestRead(t *testing.T) {
	mounts, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if Find(mounts, "/") == nil {
		t.Fatal("no / in /proc/self/mountinfo")
	}
}
