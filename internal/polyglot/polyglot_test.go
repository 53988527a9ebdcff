package polyglot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPythonMissingModule(t *testing.T) {
	_, err := Python(context.Background(), "goaspire_no_such_module")
	var missing *MissingError
	if !errors.Is(err, ErrMissing) || !errors.As(err, &missing) {
		t.Fatalf("err = %v, want a *MissingError", err)
	}
	for _, want := range []string{"python3 with goaspire_no_such_module", "apt-get install python3 python3-goaspire_no_such_module"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

func TestCurrent(t *testing.T) {
	old, now := time.Now().Add(-time.Hour), time.Now()
	for _, tc := range []struct {
		name              string
		installed, locked *time.Time
		want              bool
	}{
		{"never installed", nil, &now, false},
		{"installed after the lockfile", &now, &old, true},
		{"lockfile changed since", &old, &now, false},
		{"no lockfile", &now, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			touch := func(path string, at *time.Time) {
				if at == nil {
					return
				}
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(path, *at, *at); err != nil {
					t.Fatal(err)
				}
			}
			touch(filepath.Join(dir, "node_modules", ".package-lock.json"), tc.installed)
			touch(filepath.Join(dir, "package-lock.json"), tc.locked)
			if got := current(dir); got != tc.want {
				t.Errorf("current = %v, want %v", got, tc.want)
			}
		})
	}
}
