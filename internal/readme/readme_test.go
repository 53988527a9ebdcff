// Package readme holds the test that keeps the README's Go snippets
// compiling.
package readme

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// imports maps the package names the README's snippets use to their
// import paths; a snippet that uses a name not here fails the test.
var imports = map[string]string{
	"context":             "context",
	"errors":              "errors",
	"json":                "encoding/json",
	"fmt":                 "fmt",
	"io":                  "io",
	"log":                 "log",
	"slog":                "log/slog",
	"http":                "net/http",
	"url":                 "net/url",
	"os":                  "os",
	"signal":              "os/signal",
	"syscall":             "syscall",
	"time":                "time",
	"servicedefaults":     "github.com/goaspire/goaspire/servicedefaults",
	"cache":               "github.com/goaspire/goaspire/cache",
	"cqrs":                "github.com/goaspire/goaspire/cqrs",
	"discovery":           "github.com/goaspire/goaspire/discovery",
	"health":              "github.com/goaspire/goaspire/health",
	"resilience":          "github.com/goaspire/goaspire/resilience",
	"resiliencetest":      "github.com/goaspire/goaspire/resilience/resiliencetest",
	"rabbitmq":            "github.com/goaspire/goaspire/messaging/rabbitmq",
	"natsmsg":             "github.com/goaspire/goaspire/messaging/nats",
	"redisevents":         "github.com/goaspire/goaspire/messaging/redisevents",
	"userspb":             "github.com/goaspire/goaspire/examples/users/userspb",
	"aspirepostgres":      "github.com/goaspire/goaspire/integrations/aspirepostgres",
	"aspireredis":         "github.com/goaspire/goaspire/integrations/aspireredis",
	"aspirerabbitmq":      "github.com/goaspire/goaspire/integrations/aspirerabbitmq",
	"aspirenats":          "github.com/goaspire/goaspire/integrations/aspirenats",
	"aspiregrpc":          "github.com/goaspire/goaspire/integrations/aspiregrpc",
	"aspireazure":         "github.com/goaspire/goaspire/integrations/aspireazure",
	"azcore":              "github.com/Azure/azure-sdk-for-go/sdk/azcore",
	"policy":              "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy",
	"testserver":          "github.com/goaspire/goaspire/testserver",
	"servicedefaultstest": "github.com/goaspire/goaspire/servicedefaults/servicedefaultstest",
	"chi":                 "github.com/go-chi/chi/v5",
	"nats":                "github.com/nats-io/nats.go",
	"jetstream":           "github.com/nats-io/nats.go/jetstream",
	"redis":               "github.com/redis/go-redis/v9",
	"pgx":                 "github.com/jackc/pgx/v5",
	"pgxpool":             "github.com/jackc/pgx/v5/pgxpool",
	"propagation":         "go.opentelemetry.io/otel/propagation",
	"grpc":                "google.golang.org/grpc",
	"testing":             "testing",
	"httptest":            "net/http/httptest",
}

// snippet is one ```go block of the README, with the declarations of the
// <!-- snippet: ... --> comment right before it, if any.
type snippet struct {
	line    int // of the opening fence, 1-based
	code    string
	context string
}

func readSnippets(t *testing.T, path string) []snippet {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []snippet
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```go" {
			continue
		}
		s := snippet{line: i + 1}
		before := strings.TrimSpace(strings.Join(lines[max(0, i-40):i], "\n"))
		if k := strings.LastIndex(before, "<!--"); k >= 0 && strings.HasSuffix(before, "-->") {
			if c, ok := strings.CutPrefix(strings.TrimSpace(before[k+len("<!--"):len(before)-len("-->")]), "snippet:"); ok {
				s.context = c
			}
		}
		j := i + 1
		for ; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
		}
		s.code = strings.Join(lines[i+1:j], "\n")
		out = append(out, s)
		i = j
	}
	return out
}

// source makes a Go file of package name from s: a snippet of
// declarations as it is, a snippet of statements as the body of a
// function, with the variables it declares at its top level used once so
// that they may be left unused as a fragment (a whole function keeps Go's
// rules: its unused variables fail the test). Imports come from the
// snippet's own import lines and from the package names it uses.
func (s snippet) source(name string) (string, error) {
	var own []string
	var body []string
	for _, l := range strings.Split(s.code, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "import ") {
			own = append(own, strings.TrimSpace(l))
			continue
		}
		body = append(body, l)
	}
	code := strings.Join(body, "\n")
	head := "package " + name + "\n\n"
	src := head + s.context + "\n" + code + "\n"
	fset := token.NewFileSet()
	if _, err := parser.ParseFile(fset, "", src, 0); err != nil {
		// Statements: wrap them.
		fn := "func snippet() error {\n" + code + "\n}\n"
		f, err := parser.ParseFile(fset, "", head+fn, 0)
		if err != nil {
			return "", fmt.Errorf("neither declarations nor statements: %w", err)
		}
		stmts := f.Decls[0].(*ast.FuncDecl).Body.List
		var tail []string
		for _, st := range stmts {
			switch st := st.(type) {
			case *ast.AssignStmt:
				if st.Tok == token.DEFINE {
					for _, e := range st.Lhs {
						if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
							tail = append(tail, "_ = "+id.Name)
						}
					}
				}
			case *ast.DeclStmt:
				if gd, ok := st.Decl.(*ast.GenDecl); ok && gd.Tok == token.VAR {
					for _, sp := range gd.Specs {
						for _, id := range sp.(*ast.ValueSpec).Names {
							tail = append(tail, "_ = "+id.Name)
						}
					}
				}
			}
		}
		if len(stmts) == 0 || !isReturn(stmts[len(stmts)-1]) {
			tail = append(tail, "return nil")
		}
		src = head + s.context + "\nfunc snippet() error {\n" + code + "\n" + strings.Join(tail, "\n") + "\n}\n"
	}
	f, err := parser.ParseFile(fset, "", src, 0)
	if err != nil {
		return "", err
	}
	used := map[string]bool{}
	for _, id := range f.Unresolved {
		used[id.Name] = true
	}
	var paths []string
	for _, l := range own {
		paths = append(paths, strings.TrimPrefix(l, "import "))
	}
	for n := range used {
		p, ok := imports[n]
		if !ok {
			continue
		}
		dup := false
		for _, l := range own {
			dup = dup || strings.Contains(l, `"`+p+`"`)
		}
		if dup {
			continue
		}
		if n == "natsmsg" {
			paths = append(paths, n+` "`+p+`"`)
		} else {
			paths = append(paths, `"`+p+`"`)
		}
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	buf.WriteString(head)
	for _, p := range paths {
		buf.WriteString("import " + p + "\n")
	}
	buf.WriteString(strings.TrimPrefix(src, head))
	return buf.String(), nil
}

func isReturn(st ast.Stmt) bool {
	_, ok := st.(*ast.ReturnStmt)
	return ok
}

// TestREADMESnippets compiles and vets every Go snippet of the README.
func TestREADMESnippets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the README's snippets")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	snippets := readSnippets(t, filepath.Join(root, "README.md"))
	if len(snippets) < 10 {
		t.Fatalf("found %d Go snippets in the README; the reader is broken", len(snippets))
	}
	// Inside the module, so that the snippets build against this tree; a
	// directory starting with _ is left out of ./... patterns.
	dir, err := os.MkdirTemp(".", "_snippets")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var pkgs []string
	where := map[string]int{}
	for i, s := range snippets {
		name := fmt.Sprintf("s%02d", i+1)
		src, err := s.source(name)
		if err != nil {
			t.Errorf("README.md:%d: %v", s.line, err)
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "snippet.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, "./"+filepath.ToSlash(filepath.Join(dir, name)))
		where[name] = s.line
	}
	cmd := exec.Command("go", append([]string{"vet"}, pkgs...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := string(out)
		for name, line := range where {
			msg = strings.ReplaceAll(msg, filepath.Join(dir, name)+"/snippet.go", fmt.Sprintf("README.md block at line %d (%s)", line, name))
		}
		t.Fatalf("go vet of the README's snippets: %v\n%s", err, msg)
	}
}
