package servicedefaults_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goaspire/goaspire/servicedefaults"
)

// sideServer is a SideServer answering the requests under /side/ on the
// HTTP listener, recording what Serve and Shutdown ask of it.
type sideServer struct {
	http2   bool  // ask for HTTP/2 in Start
	failing error // Start's error
	stopErr error // Stop's error

	mu       sync.Mutex
	start    *servicedefaults.SideStart
	drains   int
	stops    int
	httpDone bool // httpDone was closed when Stop returned
}

func (s *sideServer) Start(st *servicedefaults.SideStart) error {
	if s.failing != nil {
		return s.failing
	}
	if s.http2 {
		if err := st.ShareHTTP2(); err != nil {
			return err
		}
	}
	next := st.Server.Handler
	st.Server.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/side/") {
			_, _ = w.Write([]byte("side"))
			return
		}
		next.ServeHTTP(w, r)
	})
	s.mu.Lock()
	s.start = st
	s.mu.Unlock()
	return nil
}

func (s *sideServer) Drain() {
	s.mu.Lock()
	s.drains++
	s.mu.Unlock()
}

func (s *sideServer) Stop(ctx context.Context, httpDone <-chan struct{}) error {
	<-httpDone
	s.mu.Lock()
	s.stops++
	s.httpDone = true
	s.mu.Unlock()
	return s.stopErr
}

func (s *sideServer) state() (start *servicedefaults.SideStart, drains, stops int, httpDone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start, s.drains, s.stops, s.httpDone
}

// TestSideServer: Serve starts a side server with the HTTP server and its
// address, lets it take requests on the HTTP listener, drains it when
// shutdown begins, stops it once HTTP has drained, and returns its error.
func TestSideServer(t *testing.T) {
	app, _ := newApp(t, nil, nil, servicedefaults.WithShutdownTimeout(5*time.Second))
	side := &sideServer{http2: true, stopErr: errors.New("side: cut off")}
	if err := app.AddSideServer(side); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Serve(context.Background(), ln) }()
	base := "http://" + ln.Addr().String()
	waitFor(t, "the side server to answer", func() bool {
		resp, err := http.Get(base + "/side/x")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if code, body := get(t, nil, base+"/side/x"); code != 200 || body != "side" {
		t.Fatalf("GET /side/x = %d %q", code, body)
	}
	if code, body := get(t, nil, base+"/health"); code != 200 || body != "Healthy" {
		t.Fatalf("GET /health = %d %q", code, body)
	}
	st, drains, _, _ := side.state()
	if st.Addr != ln.Addr().String() || st.Scheme != "http" || st.Grace != 5*time.Second {
		t.Errorf("SideStart = %+v", st)
	}
	if !st.Server.Protocols.UnencryptedHTTP2() || !st.Server.Protocols.HTTP1() {
		t.Errorf("protocols after ShareHTTP2 = %v, want HTTP/1 and h2c", st.Server.Protocols)
	}
	if drains != 0 {
		t.Fatalf("drained %d times before shutdown", drains)
	}
	if err := app.AddSideServer(&sideServer{}); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("AddSideServer while serving = %v, want ErrClosed", err)
	}

	go app.Shutdown(context.Background())
	if err := <-served; err == nil || !strings.Contains(err.Error(), "side: cut off") {
		t.Fatalf("Serve = %v, want the side server's error", err)
	}
	_, drains, stops, httpDone := side.state()
	if drains == 0 || stops != 1 || !httpDone {
		t.Fatalf("drains %d, stops %d (after HTTP drained: %v), want >0, 1, true", drains, stops, httpDone)
	}
}

// TestSideServerErrors: a side server's Start error is Serve's, and
// stops those started before it; ShareHTTP2 names the Protocols key that
// excludes HTTP/2; Drain is called by Shutdown without Serve; no side
// server is added after Shutdown.
func TestSideServerErrors(t *testing.T) {
	t.Run("Start fails", func(t *testing.T) {
		app, _ := newApp(t, nil, nil)
		first := &sideServer{}
		for _, s := range []*sideServer{first, {failing: errors.New("side: no port")}} {
			if err := app.AddSideServer(s); err != nil {
				t.Fatal(err)
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := app.Serve(context.Background(), ln); err == nil || !strings.Contains(err.Error(), "side: no port") {
			t.Fatalf("Serve = %v, want the Start error", err)
		}
		if _, _, stops, _ := first.state(); stops != 1 {
			t.Fatalf("the side server started first was stopped %d times, want 1", stops)
		}
	})
	t.Run("Http1 only", func(t *testing.T) {
		app, _ := newApp(t, map[string]string{"Kestrel:EndpointDefaults:Protocols": "Http1"}, nil)
		if err := app.AddSideServer(&sideServer{http2: true}); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := app.Serve(context.Background(), ln); err == nil || !strings.Contains(err.Error(), "Kestrel:EndpointDefaults:Protocols") {
			t.Fatalf("Serve = %v, want an error naming Kestrel:EndpointDefaults:Protocols", err)
		}
	})
	t.Run("Shutdown without Serve", func(t *testing.T) {
		app, _ := newApp(t, nil, nil)
		side := &sideServer{}
		if err := app.AddSideServer(side); err != nil {
			t.Fatal(err)
		}
		if err := app.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, drains, stops, _ := side.state(); drains == 0 || stops != 0 {
			t.Fatalf("drains %d, stops %d; want >0, 0", drains, stops)
		}
		if err := app.AddSideServer(&sideServer{}); !errors.Is(err, servicedefaults.ErrClosed) {
			t.Fatalf("AddSideServer after Shutdown = %v, want ErrClosed", err)
		}
	})
}
