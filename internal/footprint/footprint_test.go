package footprint

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// side is one of the two programs compared.
type side struct {
	name string // directory under testdata
	pkg  string // import path, relative to the module root

	build        []time.Duration // cold builds
	size, strip  int64           // bytes
	bin          string          // the stripped binary
	starts       []time.Duration // start to first /health 200
	cpu          []time.Duration // CPU time the process used until then
	rss          []int64         // kB
	startFailure error
}

// Goals are the largest goaspire/plain ratios issue #22 accepts.
const (
	goalBuild = 1.10
	goalSize  = 1.10
	goalStart = 1.25
	goalRSS   = 1.15
)

// The environment both programs start with: the CA variables of a Debian
// image, which make a TLS stack read the system bundle.
const (
	sslCertFile = "/etc/ssl/certs/ca-certificates.crt"
	sslCertDir  = "/etc/ssl/certs"
)

func TestFootprint(t *testing.T) {
	mode := os.Getenv("GOASPIRE_FOOTPRINT")
	if mode == "" {
		t.Skip("measures for minutes: run with GOASPIRE_FOOTPRINT=1 (see the package documentation)")
	}
	builds := envCount(t, "GOASPIRE_FOOTPRINT_BUILDS", 3, 0)
	starts := envCount(t, "GOASPIRE_FOOTPRINT_STARTS", 41, 1)
	rssRuns := envCount(t, "GOASPIRE_FOOTPRINT_RSS", 9, 1)
	t.Logf("load average at the start: %s", loadAverage())
	defer func() { t.Logf("load average at the end: %s", loadAverage()) }()
	goBin := goCommand(t)
	root := moduleRoot(t, goBin)
	dir := t.TempDir()

	a := &side{name: "goaspire", pkg: "./internal/footprint/testdata/goaspire"}
	b := &side{name: "plain", pkg: "./internal/footprint/testdata/plain"}
	sides := []*side{a, b}

	// Sizes first: these builds use the usual build cache and fill the
	// module cache, so the cold builds download nothing.
	for _, s := range sides {
		full := filepath.Join(dir, s.name+"-full")
		s.bin = filepath.Join(dir, s.name)
		if _, err := goBuild(goBin, root, "", full, s.pkg); err != nil {
			t.Fatal(err)
		}
		if _, err := goBuild(goBin, root, "", s.bin, "-trimpath", "-ldflags=-s -w", s.pkg); err != nil {
			t.Fatal(err)
		}
		s.size, s.strip = fileSize(t, full), fileSize(t, s.bin)
	}

	for r := range builds {
		for _, s := range turn(sides, r) {
			cache, err := os.MkdirTemp("", "footprint-gocache-")
			if err != nil {
				t.Fatal(err)
			}
			d, err := goBuild(goBin, root, cache, filepath.Join(dir, s.name+"-cold"), s.pkg)
			_ = os.RemoveAll(cache)
			if err != nil {
				t.Fatal(err)
			}
			s.build = append(s.build, d)
			t.Logf("cold build %d of %s: %v", r+1, s.name, d.Round(10*time.Millisecond))
		}
	}

	work := t.TempDir() // the programs' working directory: no appsettings.json
	for r := range starts + rssRuns {
		for _, s := range turn(sides, r) {
			if s.startFailure != nil {
				continue
			}
			withRSS := r >= starts
			run, err := startOnce(s.bin, work, withRSS)
			if err != nil {
				s.startFailure = err
				t.Errorf("%s: %v", s.name, err)
				continue
			}
			if withRSS {
				s.rss = append(s.rss, run.rss)
			} else {
				s.starts = append(s.starts, run.took)
				s.cpu = append(s.cpu, run.cpu)
			}
		}
	}
	if t.Failed() {
		return
	}

	var missed []string
	row := func(what string, av, bv float64, format func(float64) string, goal float64) {
		ratio := av / bv
		verdict := ""
		if goal > 0 {
			verdict = fmt.Sprintf("goal ≤ %.2fx: met", goal)
			if ratio > goal {
				verdict = fmt.Sprintf("goal ≤ %.2fx: MISSED", goal)
				missed = append(missed, what)
			}
		}
		t.Logf("%-26s %12s %12s %7.3fx  %s", what, format(av), format(bv), ratio, verdict)
	}
	secs := func(v float64) string { return fmt.Sprintf("%.2f s", v/1e9) }
	ms := func(v float64) string { return fmt.Sprintf("%.1f ms", v/1e6) }
	mib := func(v float64) string { return fmt.Sprintf("%.2f MiB", v/(1<<20)) }
	kb := func(v float64) string { return fmt.Sprintf("%.1f MiB", v/1024) }

	t.Logf("%-26s %12s %12s %8s", "", a.name, b.name, "ratio")
	if builds > 0 {
		row(fmt.Sprintf("cold go build (median/%d)", builds), median(a.build), median(b.build), secs, goalBuild)
	}
	row("binary", float64(a.size), float64(b.size), mib, goalSize)
	row("binary -s -w", float64(a.strip), float64(b.strip), mib, goalSize)
	row(fmt.Sprintf("start→/health (median/%d)", starts), median(a.starts), median(b.starts), ms, goalStart)
	row("start→/health (p90)", p90(a.starts), p90(b.starts), ms, 0)
	row("CPU until then (median)", median(a.cpu), median(b.cpu), ms, 0)
	row(fmt.Sprintf("idle RSS (median/%d)", rssRuns), median(a.rss), median(b.rss), kb, goalRSS)
	if len(missed) > 0 && mode == "strict" {
		t.Errorf("goals missed: %s", strings.Join(missed, ", "))
	}
}

// turn returns sides in the order of round r: the order alternates, so a
// change in the machine's load falls on both alike.
func turn(sides []*side, r int) []*side {
	if r%2 == 0 {
		return sides
	}
	return []*side{sides[1], sides[0]}
}

// envCount reads a number of runs of at least least from key.
func envCount(t *testing.T, key string, def, least int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		t.Fatalf("%s=%q: want a number from %d up", key, v, least)
	}
	return n
}

// loadAverage returns the first three fields of /proc/loadavg: the
// figures mean little on a machine busy with something else.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// goCommand returns the go command: go test puts its GOROOT/bin first on
// the PATH of the tests it runs.
func goCommand(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("finding the go command: %v", err)
	}
	return p
}

// moduleRoot returns the directory of goaspire's go.mod.
func moduleRoot(t *testing.T, goBin string) string {
	t.Helper()
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		t.Fatal("go env GOMOD: not in a module")
	}
	return filepath.Dir(mod)
}

// goBuild builds pkg (and the flags before it) into out from the module
// root, with the build cache cache ("" for the usual one), and returns how
// long it took.
func goBuild(goBin, root, cache, out string, args ...string) (time.Duration, error) {
	cmd := exec.Command(goBin, append([]string{"build", "-o", out}, args...)...)
	cmd.Dir = root
	cmd.Env = os.Environ()
	if cache != "" {
		cmd.Env = append(cmd.Env, "GOCACHE="+cache)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("go build %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return time.Since(start), nil
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// startRun is what startOnce measured of one process.
type startRun struct {
	took time.Duration // from starting the process to its first /health 200
	cpu  time.Duration // the CPU time its threads had used then (less noisy on a busy machine)
	rss  int64         // VmRSS in kB after a second idle, when asked
}

// startOnce starts bin on a free port and measures it (see startRun). It
// stops the process with SIGTERM.
func startOnce(bin, dir string, withRSS bool) (startRun, error) {
	var run startRun
	port, err := freePort()
	if err != nil {
		return run, err
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"PORT=" + strconv.Itoa(port),
		"SSL_CERT_FILE=" + sslCertFile,
		"SSL_CERT_DIR=" + sslCertDir,
		"services__pricing__http__0=http://127.0.0.1:9",
	}
	var output syncTail
	cmd.Stdout, cmd.Stderr = &output, &output
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return run, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("did not stop within 30 s of SIGTERM")
		}
	}

	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				run.took = time.Since(start)
				break
			}
		}
		select {
		case err := <-exited:
			return run, fmt.Errorf("exited before answering /health (%v):\n%s", err, output.String())
		default:
		}
		if time.Since(start) > 60*time.Second {
			_ = stop()
			return run, fmt.Errorf("no /health 200 within 60 s:\n%s", output.String())
		}
		time.Sleep(250 * time.Microsecond)
	}

	if run.cpu, err = cpuTime(cmd.Process.Pid); err != nil {
		_ = stop()
		return run, err
	}
	if withRSS {
		time.Sleep(time.Second)
		if run.rss, err = vmRSS(cmd.Process.Pid); err != nil {
			_ = stop()
			return run, err
		}
	}
	if err := stop(); err != nil {
		return run, fmt.Errorf("stopping: %v\n%s", err, output.String())
	}
	return run, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// cpuTime returns the time the threads of process pid have run on a CPU,
// from their /proc/pid/task/*/schedstat (in nanoseconds, unlike the clock
// ticks of /proc/pid/stat).
func cpuTime(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no /proc/%d/task/*/schedstat: %v", pid, err)
	}
	var total time.Duration
	for _, f := range tasks {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		fields := strings.Fields(string(data))
		if len(fields) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %v", f, err)
		}
		total += time.Duration(ns)
	}
	return total, nil
}

// vmRSS reads the resident set size of process pid, in kB.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func median[T time.Duration | int64](v []T) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return float64(s[n/2])
	}
	return (float64(s[n/2-1]) + float64(s[n/2])) / 2
}

// p90 is the nearest-rank 90th percentile.
func p90[T time.Duration | int64](v []T) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	return float64(s[int(math.Ceil(0.9*float64(len(s))))-1])
}

// syncTail keeps the last 8 KiB a program wrote, for error messages.
type syncTail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *syncTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - 8<<10; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *syncTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
