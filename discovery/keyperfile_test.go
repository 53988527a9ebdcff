package discovery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kubernetesSecretDir lays files out as the kubelet mounts a Secret: the
// files in a timestamped directory, ..data linking to it, and each key a
// link through ..data.
func kubernetesSecretDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	ts := "..2026_12_07_17_00_00.123456789"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, ts, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestKeyPerFile(t *testing.T) {
	dir := kubernetesSecretDir(t, map[string]string{
		"ConnectionStrings__db": "Host=db;Password=from-file\n",
		"Aspire__Redis__Port":   "6380\r\n",
		"api-key":               "k1\n\n",
		"ignore.me":             "x",
		"Overridden":            "file",
		"Db__Password":          "hunter2x\n",
	})
	// A subdirectory, with a link to it, and a dotfile are skipped.
	if err := os.MkdirAll(filepath.Join(dir, "nested"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nested", "Inner"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nested", filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".hidden"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "appsettings.json"), []byte(`{"Overridden":"json","FromJSON":"j","api-key":"json"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg, err := Load(WithDir(app), WithEnviron([]string{KeyPerFileVariable + "=" + dir, "OVERRIDDEN=env"}))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"ConnectionStrings:db": "Host=db;Password=from-file",
		"Aspire:Redis:Port":    "6380",
		"api-key":              "k1\n", // one newline trimmed, as .NET does
		"Overridden":           "env",  // the environment wins over files
		"FromJSON":             "j",
	} {
		if got, ok := cfg.Lookup(key); !ok || got != want {
			t.Errorf("%s = %q, %v; want %q", key, got, ok, want)
		}
	}
	for _, key := range []string{"ignore.me", "nested:Inner", "Inner", "linked", ".hidden", "..data"} {
		if cfg.Exists(key) {
			t.Errorf("%s is set", key)
		}
	}
	if cs, err := cfg.ConnectionString("db"); err != nil || cs != "Host=db;Password=from-file" {
		t.Errorf("ConnectionString(db) = %q, %v", cs, err)
	}
	// A secret from a file is masked in errors as one from the environment.
	if _, err := cfg.Int("Db:Password", 0); err == nil || strings.Contains(err.Error(), "hunter2x") {
		t.Errorf("Int(Db:Password) error = %v; want an error without the value", err)
	}

	// The files sit above appsettings.json.
	if got := cfg.String("api-key"); got == "json" {
		t.Error("appsettings.json overrode a key file")
	}
}

func TestKeyPerFileSeveralDirectories(t *testing.T) {
	a := kubernetesSecretDir(t, map[string]string{"Key": "a", "OnlyA": "a"})
	b := kubernetesSecretDir(t, map[string]string{"Key": "b"})
	c := kubernetesSecretDir(t, map[string]string{"OnlyA": "c"})
	cfg, err := Load(WithFS(emptyFS{}), WithEnviron([]string{KeyPerFileVariable + "=" + a + string(os.PathListSeparator) + b}), WithKeyPerFile(c))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.String("Key"); got != "b" {
		t.Errorf("Key = %q, want the later directory's b", got)
	}
	if got := cfg.String("OnlyA"); got != "c" {
		t.Errorf("OnlyA = %q, want WithKeyPerFile's c", got)
	}
}

func TestKeyPerFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent")
	_, err := Load(WithFS(emptyFS{}), WithEnviron([]string{KeyPerFileVariable + "=" + missing}))
	if err == nil || !strings.Contains(err.Error(), KeyPerFileVariable) {
		t.Fatalf("missing directory: err = %v, want one naming %s", err, KeyPerFileVariable)
	}

	dir := t.TempDir()
	if err := os.Symlink("nowhere", filepath.Join(dir, "Dangling")); err != nil {
		t.Fatal(err)
	}
	// A dangling link (a key the kubelet is removing) is skipped.
	if cfg, err := Load(WithFS(emptyFS{}), WithEnviron([]string{KeyPerFileVariable + "=" + dir})); err != nil || cfg.Exists("Dangling") {
		t.Errorf("dangling link: %v, %v; want it skipped", cfg, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Unreadable"), []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if _, err := Load(WithFS(emptyFS{}), WithEnviron([]string{KeyPerFileVariable + "=" + dir})); err == nil || !strings.Contains(err.Error(), "Unreadable") {
			t.Errorf("unreadable file: err = %v, want one naming it", err)
		}
	}

	// FromMap never reads files.
	ok := kubernetesSecretDir(t, map[string]string{"Key": "v"})
	if cfg := FromMap(map[string]string{KeyPerFileVariable: ok}); cfg.Exists("Key") {
		t.Error("FromMap read a key-per-file directory")
	}
	// Nor does Load without the variable.
	if cfg, err := Load(WithFS(emptyFS{}), WithEnviron(nil)); err != nil || cfg.Exists("Key") {
		t.Errorf("Load without the variable: %v, %v", cfg, err)
	}
}
