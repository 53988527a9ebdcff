package servicedefaultstest_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

func TestNewServesAndKeepsLogs(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	})
	app := servicedefaultstest.New(t, mux, map[string]string{"OTEL_SERVICE_NAME": "kit"})
	if !strings.HasPrefix(app.URL, "http://127.0.0.1:") {
		t.Fatalf("URL = %q, want a loopback URL", app.URL)
	}
	for path, want := range map[string]int{"/hello": 200, "/health": 200, "/alive": 200, "/nope": 404} {
		resp, err := http.Get(app.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if app.UsesGlobals() {
		t.Error("the test App installed the process-wide globals")
	}
	app.Logger().Info("from the test", "k", "v")
	if got := app.Logs.String(); !strings.Contains(got, "from the test") {
		t.Errorf("Logs = %q, want the record logged", got)
	}
}

func TestNewUnstartedHasNoURL(t *testing.T) {
	app := servicedefaultstest.NewUnstarted(t, nil, nil)
	if app.URL != "" {
		t.Fatalf("URL = %q before Start", app.URL)
	}
	app.Start()
	resp, err := http.Get(app.URL + "/alive")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /alive: %d", resp.StatusCode)
	}
}
