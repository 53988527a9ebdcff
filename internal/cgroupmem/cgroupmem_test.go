package cgroupmem

import (
	"os"
	"testing"
	"testing/fstest"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

func TestLimit(t *testing.T) {
	tests := []struct {
		name       string
		fs         fstest.MapFS
		want       int64
		wantSource string
		wantOK     bool
	}{
		{"v2 container root", fstest.MapFS{
			"proc/self/cgroup":          file("0::/\n"),
			"sys/fs/cgroup/memory.max":  file("536870912\n"),
			"sys/fs/cgroup/cpu.max":     file("max 100000\n"),
			"sys/fs/cgroup/memory.high": file("max\n"),
		}, 512 << 20, "sys/fs/cgroup/memory.max", true},
		{"v2 max", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, 0, "", false},
		{"v2 nested: the parent is tighter", fstest.MapFS{
			"proc/self/cgroup": file("0::/kubepods/burstable/pod1/c1\n"),
			"sys/fs/cgroup/kubepods/burstable/pod1/c1/memory.max": file("max\n"),
			"sys/fs/cgroup/kubepods/burstable/pod1/memory.max":    file("268435456\n"),
			"sys/fs/cgroup/kubepods/burstable/memory.max":         file("1073741824\n"),
			"sys/fs/cgroup/kubepods/memory.max":                   file("max\n"),
		}, 256 << 20, "sys/fs/cgroup/kubepods/burstable/pod1/memory.max", true},
		{"v2 nested: the leaf is tighter", fstest.MapFS{
			"proc/self/cgroup":                 file("0::/a/b\n"),
			"sys/fs/cgroup/a/b/memory.max":     file("100000000\n"),
			"sys/fs/cgroup/a/memory.max":       file("200000000\n"),
			"sys/fs/cgroup/memory.max_ignored": file("1\n"),
		}, 100000000, "sys/fs/cgroup/a/b/memory.max", true},
		{"v1", fstest.MapFS{
			"proc/self/cgroup": file("12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/\n"),
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": file("1073741824\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes":            file("9223372036854771712\n"),
		}, 1 << 30, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", true},
		{"v1 inside the container: only the mount root exists", fstest.MapFS{
			"proc/self/cgroup":                           file("3:memory,hugetlb:/docker/abc\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("2147483648\n"),
		}, 2 << 30, "sys/fs/cgroup/memory/memory.limit_in_bytes", true},
		{"v1 unlimited", fstest.MapFS{
			"proc/self/cgroup": file("4:memory:/process_api/x\n0::/\n"),
			"sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes": file("9223372036854771712\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes":               file("9223372036854771712\n"),
		}, 0, "", false},
		{"no cgroup file", fstest.MapFS{}, 0, "", false},
		{"no controller line", fstest.MapFS{"proc/self/cgroup": file("garbage\n")}, 0, "", false},
		{"no limit files", fstest.MapFS{"proc/self/cgroup": file("0::/x\n")}, 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, source, ok, err := Limit(tt.fs)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || source != tt.wantSource || ok != tt.wantOK {
				t.Errorf("Limit = %d, %q, %v; want %d, %q, %v", got, source, ok, tt.want, tt.wantSource, tt.wantOK)
			}
		})
	}
}

func TestLimitBadFile(t *testing.T) {
	_, _, _, err := Limit(fstest.MapFS{
		"proc/self/cgroup":         file("0::/\n"),
		"sys/fs/cgroup/memory.max": file("lots\n"),
	})
	if err == nil {
		t.Fatal("no error for an unparsable memory.max")
	}
}

// TestLimitHost reads the real files: whatever they say, no error.
func TestLimitHost(t *testing.T) {
	n, source, ok, err := Limit(os.DirFS("/"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("limit %d from %q (ok %v)", n, source, ok)
}
