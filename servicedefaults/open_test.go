package servicedefaults_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/servicedefaults"
)

// fakeClient is what the openers of these tests open: OpenClient's
// machinery is the same whatever the client.
type fakeClient struct{ name string }

// openFake opens a fakeClient called name at once.
func openFake(name string) func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
	return func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
		return servicedefaults.Opened[*fakeClient]{Client: &fakeClient{name: name}}, nil
	}
}

// openUntilDone is an open that never finishes on its own, as a database
// behind a dropped route with a long connect timeout: it closes started
// and returns when its context ends.
func openUntilDone(started chan<- struct{}) func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
	return func(ctx context.Context) (servicedefaults.Opened[*fakeClient], error) {
		close(started)
		<-ctx.Done()
		return servicedefaults.Opened[*fakeClient]{}, ctx.Err()
	}
}

// TestOpenDoesNotBlockOtherOpens: while a client that never answers is
// being opened, the App still opens other names; a second caller of a
// name being opened waits for the first open but only as long as its own
// context; the first caller's context bounds the open itself; Shutdown
// ends an open still in progress, and later opens fail, with ErrClosed.
func TestOpenDoesNotBlockOtherOpens(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	bg := context.Background()

	// The open of "stuck", with no way to end it but Shutdown.
	stuckStarted := make(chan struct{})
	stuck := make(chan error, 1)
	go func() {
		_, err := servicedefaults.OpenClient(bg, app, "fake", "stuck", openUntilDone(stuckStarted))
		stuck <- err
	}()
	<-stuckStarted

	others := make(chan error, 2)
	for _, name := range []string{"a", "b"} {
		go func() {
			c, err := servicedefaults.OpenClient(bg, app, "fake", name, openFake(name))
			if err == nil && c.name != name {
				err = errors.New("got the client of " + c.name)
			}
			others <- err
		}()
	}
	for range 2 {
		select {
		case err := <-others:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(hangGuard):
			t.Fatal("opening another name waited for the open in progress")
		}
	}

	// The open of "db" is bounded by its caller's context, and so is a
	// second caller waiting for it.
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	leaderStarted := make(chan struct{})
	leader := make(chan error, 1)
	go func() {
		_, err := servicedefaults.OpenClient(ctx, app, "fake", "db", openUntilDone(leaderStarted))
		leader <- err
	}()
	<-leaderStarted
	wctx, wcancel := context.WithCancel(bg)
	waiter := make(chan error, 1)
	go func() {
		_, err := servicedefaults.OpenClient(wctx, app, "fake", "db", func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
			t.Error("a second caller opened the name being opened")
			return servicedefaults.Opened[*fakeClient]{}, errors.New("opened twice")
		})
		waiter <- err
	}()
	wcancel()
	for _, c := range []struct {
		what string
		ch   chan error
	}{{"waiting caller", waiter}, {"opening caller", leader}} {
		select {
		case err := <-c.ch:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: OpenClient = %v, want context.Canceled", c.what, err)
			}
		case <-time.After(hangGuard):
			t.Fatalf("%s: OpenClient ignored its context's cancellation", c.what)
		}
		cancel() // now the opener's
	}

	sctx, scancel := context.WithTimeout(bg, 10*time.Second)
	defer scancel()
	if err := app.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	select {
	case err := <-stuck:
		if !errors.Is(err, servicedefaults.ErrClosed) || !strings.Contains(err.Error(), `fake "stuck"`) {
			t.Errorf("OpenClient(stuck) after Shutdown = %v, want ErrClosed naming the client", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Shutdown did not end the open in progress")
	}
	_, err := servicedefaults.OpenClient(bg, app, "fake", "other", func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
		t.Error("OpenClient opened after Shutdown")
		return servicedefaults.Opened[*fakeClient]{Client: &fakeClient{}}, nil
	})
	if !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("OpenClient after Shutdown = %v, want ErrClosed", err)
	}
}

// TestOpenOnceConcurrently: concurrent callers of one name share one
// client, opened once.
func TestOpenOnceConcurrently(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	const n = 8
	var opens atomic.Int32
	release := make(chan struct{})
	open := func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
		opens.Add(1)
		<-release // the other callers come while this open is in progress
		return servicedefaults.Opened[*fakeClient]{Client: &fakeClient{name: "shared"}}, nil
	}
	clients := make([]*fakeClient, n)
	var wg, calling sync.WaitGroup
	calling.Add(n)
	for i := range n {
		wg.Go(func() {
			calling.Done()
			c, err := servicedefaults.OpenClient(context.Background(), app, "fake", "shared", open)
			if err != nil {
				t.Error(err)
			}
			clients[i] = c
		})
	}
	calling.Wait()
	close(release)
	wg.Wait()
	if got := opens.Load(); got != 1 {
		t.Errorf("the name was opened %d times, want 1", got)
	}
	for i := 1; i < n; i++ {
		if clients[i] == nil || clients[i] != clients[0] {
			t.Fatalf("caller %d got another client", i)
		}
	}
}

// TestOpenFailureNotRemembered: a failed open returns the opener's error
// naming the client, and the next call opens again.
func TestOpenFailureNotRemembered(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	bg := context.Background()
	refused := errors.New("refused")
	_, err := servicedefaults.OpenClient(bg, app, "fake", "flaky", func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
		return servicedefaults.Opened[*fakeClient]{}, refused
	})
	if !errors.Is(err, refused) || !strings.Contains(err.Error(), `fake "flaky"`) {
		t.Fatalf("OpenClient = %v, want the opener's error naming the client", err)
	}
	c, err := servicedefaults.OpenClient(bg, app, "fake", "flaky", openFake("flaky"))
	if err != nil || c == nil {
		t.Fatalf("OpenClient after a failure = %v, %v; want a new open", c, err)
	}
	again, err := servicedefaults.OpenClient(bg, app, "fake", "flaky", openFake("another"))
	if err != nil || again != c {
		t.Fatalf("third OpenClient = %v, %v; want the client of the second", again, err)
	}
}

// TestOpenChecksAndClose: the checks of the clients are registered once
// per check name, and Shutdown closes the clients with its context in
// reverse order of opening (a client opened on top of another first),
// reporting a failed Close by the client's name.
func TestOpenChecksAndClose(t *testing.T) {
	// Not newApp: its cleanup fails the test on Shutdown's error, which
	// this test causes.
	app, err := servicedefaults.Add(context.Background(), nil, servicedefaults.WithoutGlobals(),
		servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var closed []string
	opener := func(name string, checks []string, closeErr error) func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
		return func(context.Context) (servicedefaults.Opened[*fakeClient], error) {
			o := servicedefaults.Opened[*fakeClient]{Client: &fakeClient{name: name}}
			for _, c := range checks {
				o.Checks = append(o.Checks, health.Check{Name: c, Check: func(context.Context) error { return nil }})
			}
			o.Close = func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Errorf("Close of %s: a context without Shutdown's deadline", name)
				}
				mu.Lock()
				closed = append(closed, name)
				mu.Unlock()
				return closeErr
			}
			return o, nil
		}
	}
	bg := context.Background()
	boom := errors.New("boom")
	for _, c := range []struct {
		name   string
		checks []string
		err    error
	}{
		{"conn", []string{"conn"}, nil},
		{"failing", nil, boom},
		{"on-top", []string{"conn", "on-top"}, nil},
	} {
		if _, err := servicedefaults.OpenClient(bg, app, "fake", c.name, opener(c.name, c.checks, c.err)); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, c := range app.Health().Checks() {
		names = append(names, c.Name)
	}
	for _, want := range []string{"conn", "on-top"} {
		if n := strings.Count(","+strings.Join(names, ",")+",", ","+want+","); n != 1 {
			t.Errorf("check %q registered %d times: %v", want, n, names)
		}
	}

	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	err = app.Shutdown(ctx)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), `closing fake "failing"`) {
		t.Errorf("Shutdown = %v, want the failed Close naming its client", err)
	}
	if want := []string{"on-top", "failing", "conn"}; !slices.Equal(closed, want) {
		t.Errorf("closed %v, want %v", closed, want)
	}
}
