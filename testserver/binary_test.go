package testserver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFindVersioned(t *testing.T) {
	tests := []struct {
		name     string
		versions []string // directories holding an executable "prog"
		others   []string // directories without it
		want     string   // version directory expected, "" for none
	}{
		{name: "none"},
		{name: "one", versions: []string{"15"}, want: "15"},
		{name: "numeric order", versions: []string{"9.6", "10", "16", "15"}, want: "16"},
		{name: "minor versions", versions: []string{"9.6", "9.10"}, want: "9.10"},
		{name: "highest lacks it", versions: []string{"14"}, others: []string{"17"}, want: "14"},
		{name: "non-version names ignored", versions: []string{"13", "latest", "15beta1"}, want: "13"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, v := range tt.versions {
				bin := filepath.Join(root, v, "bin")
				if err := os.MkdirAll(bin, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(bin, "prog"), []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, v := range tt.others {
				if err := os.MkdirAll(filepath.Join(root, v, "bin"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			want := ""
			if tt.want != "" {
				want = filepath.Join(root, tt.want, "bin", "prog")
			}
			if got := findVersioned(root, "prog"); got != want {
				t.Errorf("findVersioned = %q, want %q", got, want)
			}
		})
	}
}

func TestFindBinaryMissing(t *testing.T) {
	const name = "goaspire-no-such-program"
	_, err := FindBinary(name)
	if !errors.Is(err, ErrBinaryNotFound) {
		t.Fatalf("FindBinary(%q) error = %v, want ErrBinaryNotFound", name, err)
	}
	var missing *BinaryNotFoundError
	if !errors.As(err, &missing) || missing.Name != name {
		t.Fatalf("FindBinary(%q) error = %#v, want *BinaryNotFoundError naming it", name, err)
	}
}

func TestFindBinaryOnPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "goaspire-prog")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	got, err := FindBinary("goaspire-prog")
	if err != nil || got != path {
		t.Fatalf("FindBinary = %q, %v; want %q", got, err, path)
	}
}
