package footprint

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// core is the package every goaspire service links.
const core = "github.com/goaspire/goaspire/servicedefaults"

// forbidden are the import paths (and everything under them) the core
// must not link: the client libraries live in the integration packages,
// which a service links only when it imports them, and so does the Azure
// SDK (azidentity, azcore, MSAL), which only aspireazure links. grpc itself
// stays, for the OTLP gRPC exporters.
var forbidden = []string{
	"github.com/jackc/pgx",
	"github.com/redis/go-redis",
	"github.com/rabbitmq/amqp091-go",
	"github.com/nats-io/nats.go",
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
	"google.golang.org/grpc/health",
	"google.golang.org/grpc/reflection",
	"github.com/Azure/azure-sdk-for-go",
	"github.com/AzureAD/microsoft-authentication-library-for-go",
}

// tolerated are forbidden packages the core may link through the given
// importers only. The OTLP collector protos every OTLP exporter uses
// (go.opentelemetry.io/proto/otlp/collector/...) import grpc-gateway's
// runtime, which imports the generated types of gRPC's health service:
// the plain OpenTelemetry program in testdata links them too.
var tolerated = map[string][]string{
	"google.golang.org/grpc/health/grpc_health_v1": {"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"},
}

// TestCoreDependencies fails when the core links a forbidden package,
// naming the packages and the chain of imports that pulls each in.
func TestCoreDependencies(t *testing.T) {
	goBin := goCommand(t)
	cmd := exec.Command(goBin, "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, core)
	cmd.Dir = moduleRoot(t, goBin)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps %s: %v\n%s", core, err, stderr)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 {
			imports[fields[0]] = fields[1:]
		}
	}
	if _, ok := imports[core]; !ok {
		t.Fatalf("go list -deps did not list %s itself:\n%s", core, out)
	}
	if report := forbiddenReport(core, imports, forbidden, tolerated); report != "" {
		t.Errorf("%s links packages it must not (move their users into an integration package):\n%s", core, report)
	}
}

// forbiddenReport returns, for each prefix of bad that a package reached
// from root falls under, the packages, their importers and the shortest
// chain of imports from root to one of them; "" when there are none. A
// package of ok that only its listed importers import is not reported.
func forbiddenReport(root string, imports map[string][]string, bad []string, ok map[string][]string) string {
	// Breadth-first from root: parent[p] is the package that first
	// reached p, so following parents gives a shortest chain.
	parent := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, q := range imports[p] {
			if _, seen := parent[q]; !seen {
				parent[q] = p
				queue = append(queue, q)
			}
		}
	}
	importedBy := map[string][]string{}
	for p := range parent {
		for _, q := range imports[p] {
			importedBy[q] = append(importedBy[q], p)
		}
	}
	allowed := func(p string) bool {
		by, listed := ok[p]
		if !listed {
			return false
		}
		for _, imp := range importedBy[p] {
			if !slices.Contains(by, imp) {
				return false
			}
		}
		return true
	}
	under := func(p, prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	var b strings.Builder
	for _, prefix := range bad {
		var hits []string
		for p := range parent {
			if under(p, prefix) && !allowed(p) {
				hits = append(hits, p)
			}
		}
		if len(hits) == 0 {
			continue
		}
		slices.Sort(hits)
		// The chain to the hit nearest root.
		nearest := hits[0]
		for _, h := range hits {
			if depth(parent, h) < depth(parent, nearest) {
				nearest = h
			}
		}
		var chain []string
		for p := nearest; p != ""; p = parent[p] {
			chain = append(chain, p)
		}
		slices.Reverse(chain)
		// The packages outside the forbidden tree that import into it.
		var importers []string
		for _, h := range hits {
			for _, p := range importedBy[h] {
				if !under(p, prefix) {
					importers = append(importers, p+" imports "+h)
				}
			}
		}
		slices.Sort(importers)
		fmt.Fprintf(&b, "  %s: %d packages (%s)\n", prefix, len(hits), strings.Join(hits, ", "))
		fmt.Fprintf(&b, "    pulled in by: %s\n", strings.Join(importers, "; "))
		fmt.Fprintf(&b, "    chain: %s\n", strings.Join(chain, " -> "))
	}
	return b.String()
}

func depth(parent map[string]string, p string) int {
	n := 0
	for ; parent[p] != ""; p = parent[p] {
		n++
	}
	return n
}

// TestForbiddenReport: the report names what links a forbidden package,
// and leaves out a tolerated one only its tolerated importer imports.
func TestForbiddenReport(t *testing.T) {
	bad := []string{"bad/db", "grpc/health"}
	ok := map[string][]string{"grpc/health/v1": {"gateway"}}
	graph := map[string][]string{
		"core":        {"otlp", "cache"},
		"otlp":        {"gateway"},
		"gateway":     {"grpc/health/v1"},
		"cache":       {"bad/db/pool"},
		"bad/db/pool": {"bad/db"},
	}
	got := forbiddenReport("core", graph, bad, ok)
	for _, want := range []string{"bad/db: 2 packages (bad/db, bad/db/pool)", "cache imports bad/db/pool", "chain: core -> cache -> bad/db/pool"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "grpc/health") {
		t.Errorf("report names the tolerated package:\n%s", got)
	}
	graph["core"] = append(graph["core"], "grpc/health/v1")
	if got := forbiddenReport("core", graph, bad, ok); !strings.Contains(got, "core imports grpc/health/v1") {
		t.Errorf("a direct import of a tolerated package is not reported:\n%s", got)
	}
	if got := forbiddenReport("core", map[string][]string{"core": {"otlp"}}, bad, ok); got != "" {
		t.Errorf("report of a clean graph = %q", got)
	}
}
