package testserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrBinaryNotFound is matched (with [errors.Is]) by every error that reports a
// missing server binary. Tests skip on it; every other start error is a
// failure.
var ErrBinaryNotFound = errors.New("binary not found")

// BinaryNotFoundError reports that a server binary is not installed. It
// unwraps to [ErrBinaryNotFound].
type BinaryNotFoundError struct {
	// Name is the program that was looked for, such as "postgres" or
	// "redis-server".
	Name string
	// Searched lists where it was looked for.
	Searched []string
}

// Error implements error.
func (e *BinaryNotFoundError) Error() string {
	return fmt.Sprintf("%s: %v (searched %s)", e.Name, ErrBinaryNotFound, strings.Join(e.Searched, ", "))
}

// Unwrap returns [ErrBinaryNotFound].
func (e *BinaryNotFoundError) Unwrap() error { return ErrBinaryNotFound }

// postgresLibDir is where Debian and Ubuntu install one directory per
// PostgreSQL major version. A variable so tests can point it elsewhere.
var postgresLibDir = "/usr/lib/postgresql"

// FindBinary returns the path of the program name: found on PATH, else in the
// highest-versioned /usr/lib/postgresql/*/bin. A missing program gives a
// *[BinaryNotFoundError].
func FindBinary(name string) (string, error) {
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	if path := findVersioned(postgresLibDir, name); path != "" {
		return path, nil
	}
	return "", &BinaryNotFoundError{
		Name:     name,
		Searched: []string{"PATH", filepath.Join(postgresLibDir, "*", "bin")},
	}
}

// findVersioned returns root/<version>/bin/name for the highest version that
// has an executable name, or "" if none has.
func findVersioned(root, name string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return ""
	}
	type candidate struct {
		version []int
		path    string
	}
	var found []candidate
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		path := filepath.Join(root, e.Name(), "bin", name)
		if isExecutable(path) {
			found = append(found, candidate{v, path})
		}
	}
	if len(found) == 0 {
		return ""
	}
	sort.Slice(found, func(i, j int) bool { return versionLess(found[j].version, found[i].version) })
	return found[0].path
}

// parseVersion parses a directory name such as "15" or "9.6".
func parseVersion(s string) ([]int, bool) {
	parts := strings.Split(s, ".")
	v := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, false
		}
		v[i] = n
	}
	return v, true
}

func versionLess(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// postgresBinaries are the PostgreSQL programs of one installation.
type postgresBinaries struct {
	postgres, initdb string
	// dir is the directory postgres really lives in (symlinks resolved).
	dir string
}

// findPostgresBinaries finds postgres with [FindBinary], then initdb with
// [postgresBinaries.tool].
func findPostgresBinaries() (postgresBinaries, error) {
	var b postgresBinaries
	var err error
	if b.postgres, err = FindBinary("postgres"); err != nil {
		return b, err
	}
	b.dir = filepath.Dir(b.postgres)
	if real, err := filepath.EvalSymlinks(b.postgres); err == nil {
		b.dir = filepath.Dir(real)
	}
	if b.initdb, err = b.tool("initdb"); err != nil {
		return b, err
	}
	return b, nil
}

// tool finds another PostgreSQL program, preferring the directory postgres
// lives in: initdb must match the server's version exactly, and on Debian the
// pg_basebackup on PATH is a wrapper script that picks a version by its own
// rules.
func (b postgresBinaries) tool(name string) (string, error) {
	if path := filepath.Join(b.dir, name); isExecutable(path) {
		return path, nil
	}
	return FindBinary(name)
}
