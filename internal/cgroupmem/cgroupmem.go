// Package cgroupmem reads the memory limit of the Linux control groups
// the process runs in, the limit a container's runtime (Docker, Kubernetes)
// sets, from a file tree rooted where "/" is, so tests can pass a fake one.
package cgroupmem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// unlimited is where cgroup v1 reports "no limit" (the page-rounded
// maximum, 9223372036854771712); anything from it up means none.
const unlimited = 1 << 62

// Limit returns the tightest memory limit, in bytes, of the process's
// cgroup and of its ancestors, and the file that holds it (as a path
// below root, such as "sys/fs/cgroup/memory.max"). root is the file
// system's root: os.DirFS("/") in production.
//
// It reads proc/self/cgroup: a cgroup v1 line with the memory controller
// ("4:memory:/docker/abc") leads to sys/fs/cgroup/memory/<path>/
// memory.limit_in_bytes; otherwise the cgroup v2 line ("0::/kubepods/x")
// to sys/fs/cgroup/<path>/memory.max. Each directory from the process's
// cgroup up to the hierarchy's root counts; missing ones are skipped (in
// a container the hierarchy's root is usually the container's own
// cgroup). "max" and v1's near-2^63 values mean no limit.
//
// ok is false when there is no limit, no cgroup file system (not Linux,
// say) or no proc/self/cgroup. An error reports a limit file that exists
// but cannot be read or parsed.
func Limit(root fs.FS) (limit int64, source string, ok bool, err error) {
	raw, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return 0, "", false, nil
	}
	var v1, v2 string
	haveV1, haveV2 := false, false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		id, rest, ok1 := strings.Cut(sc.Text(), ":")
		controllers, p, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			continue
		}
		if id == "0" && controllers == "" {
			v2, haveV2 = p, true
			continue
		}
		for _, c := range strings.Split(controllers, ",") {
			if c == "memory" {
				v1, haveV1 = p, true
			}
		}
	}
	switch {
	case haveV1:
		return tightest(root, "sys/fs/cgroup/memory", v1, "memory.limit_in_bytes")
	case haveV2:
		return tightest(root, "sys/fs/cgroup", v2, "memory.max")
	}
	return 0, "", false, nil
}

// tightest walks from mount/cgroup up to mount, keeping the smallest
// limit of the file named file.
func tightest(root fs.FS, mount, cgroup, file string) (limit int64, source string, ok bool, err error) {
	dir := path.Clean("/" + cgroup)
	for {
		name := path.Join(mount, dir, file)
		n, has, err := readLimit(root, name)
		if err != nil {
			return 0, "", false, err
		}
		if has && (!ok || n < limit) {
			limit, source, ok = n, name, true
		}
		if dir == "/" {
			return limit, source, ok, nil
		}
		dir = path.Dir(dir)
	}
}

// readLimit reads one limit file: has is false when it is missing or
// says there is no limit.
func readLimit(root fs.FS, name string) (n int64, has bool, err error) {
	raw, err := fs.ReadFile(root, name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cgroupmem: reading /%s: %w", name, err)
	}
	s := strings.TrimSpace(string(raw))
	if s == "max" {
		return 0, false, nil
	}
	n, err = strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		if u, uerr := strconv.ParseUint(s, 10, 64); uerr == nil && u >= unlimited {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("cgroupmem: /%s: not a number of bytes: %q", name, s)
	}
	if n >= unlimited {
		return 0, false, nil
	}
	return n, true, nil
}
