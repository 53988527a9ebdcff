package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeyPerFileVariable names the environment variable that makes Load read
// a directory of files as configuration, one key per file, as .NET's
// AddKeyPerFile does for the secrets Kubernetes mounts as volumes:
//
//	GOASPIRE_KEY_PER_FILE_DIRECTORY=/run/secrets/shop
//
// Several directories are separated by the OS path list separator (':'
// on Unix); a later one overrides an earlier one. See Load for the rules.
const KeyPerFileVariable = "GOASPIRE_KEY_PER_FILE_DIRECTORY"

// WithKeyPerFile makes Load read the files of dir as configuration (see
// Load), after the directories KeyPerFileVariable names.
func WithKeyPerFile(dir string) Option {
	return func(o *loadOptions) { o.keyPerFile = append(o.keyPerFile, dir) }
}

// keyPerFileDirs returns the directories the environment variable names.
func keyPerFileDirs(env [][2]string) []string {
	var dirs []string
	for _, kv := range env {
		if kv[0] != KeyPerFileVariable {
			continue
		}
		dirs = dirs[:0]
		for _, d := range filepath.SplitList(kv[1]) {
			if d = strings.TrimSpace(d); d != "" {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// loadKeyPerFile sets a key per file of dir: the file name with "__" read
// as ':' is the key, the content without one trailing newline the value.
// Directories, names starting with '.' (Kubernetes' ..data and
// timestamped directories, dotfiles) or "ignore." are skipped, as .NET's
// provider and its file provider do; symbolic links are followed, and a
// dangling one (a key being removed) is skipped.
func (d *configData) loadKeyPerFile(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("discovery: %s: reading key-per-file directory: %w", KeyPerFileVariable, err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "ignore.") {
			continue
		}
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path) // follows the ..data/name links
		if errors.Is(err, fs.ErrNotExist) {
			continue // a link to a key the kubelet is removing
		}
		if err != nil {
			return fmt.Errorf("discovery: %s: key file %s: %w", KeyPerFileVariable, path, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("discovery: %s: key file %s: %w", KeyPerFileVariable, path, err)
		}
		v := string(raw)
		if s, ok := strings.CutSuffix(v, "\n"); ok {
			v = strings.TrimSuffix(s, "\r")
		}
		d.set(strings.ReplaceAll(name, "__", ":"), v)
	}
	return nil
}
