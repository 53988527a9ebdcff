package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// usersInstances is how many users instances the launcher starts.
const usersInstances = 2

// usersGateway is what the gateway needs to reach the users instances
// fast in the demo: gRPC retries wait about 100 ms instead of 2 s.
var usersGateway = map[string]string{"Aspire__Resilience__Grpc__Retry__Delay": "00:00:00.1"}

// startUsers prepares the users instances, as an AppHost with
//
//	builder.AddExecutable("users", ...).WithReplicas(2)
//	    .WithHttpEndpoint(env: "PORT")
//	    .WithHttpEndpoint(name: "grpc", env: "GRPC_PORT")
//
// would: each gets its HTTP port (health probes) and its own gRPC port.
// It returns the variables the gateway gets for them: the indexed form,
// one index per instance, and the Aspire 13 form naming the first.
func (st *stack) startUsers(cfg config, bins map[string]string) (injected, error) {
	gw := injected{}
	for i := 0; i < usersInstances; i++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		grpcPort, err := freePort()
		if err != nil {
			return nil, err
		}
		name := "users-" + strconv.Itoa(i)
		env := injected{"PORT": strconv.Itoa(port), "GRPC_PORT": strconv.Itoa(grpcPort)}
		env.telemetry(cfg.environ, "users", name)
		st.users = append(st.users, &service{
			name: name, binary: bins["users"], port: port,
			env: env.environ(cfg.environ), logPath: filepath.Join(st.dir, name+".log"),
		})
		addr := "http://127.0.0.1:" + strconv.Itoa(grpcPort)
		gw["services__users__grpc__"+strconv.Itoa(i)] = addr
		if i == 0 {
			gw["USERS_GRPC"] = addr
		}
	}
	for k, v := range usersGateway {
		gw[k] = v
	}
	return gw, nil
}

type userAnswer struct {
	ID       int32  `json:"id"`
	Name     string `json:"name"`
	ServedBy string `json:"servedBy"`
}

// usersOutage calls GET /api/users/{id} on the gateway (gRPC GetUser on
// the users instances) from four loops, kills users-0 in the middle, and
// checks that no call failed and that the calls after the kill were all
// answered by users-1.
func usersOutage(ctx context.Context, out io.Writer, st *stack) error {
	c := &client{http: &http.Client{Timeout: 10 * time.Second}, out: out}
	gw := st.gateway.url() + "/api/users/"
	dead, survivor := st.users[0], st.users[1]

	var (
		mu                      sync.Mutex
		before, after           = map[string]int{}, map[string]int{}
		failures                []string
		killed                  bool
		wg                      sync.WaitGroup
		stop                    = make(chan struct{})
		beforeCalls, afterCalls int
	)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				wasKilled := killed
				mu.Unlock()
				var u userAnswer
				code, err := c.do(ctx, http.MethodGet, gw+strconv.Itoa(g*1000+n), nil, nil, &u)
				mu.Lock()
				switch {
				case err != nil || code != http.StatusOK:
					failures = append(failures, fmt.Sprintf("status %d, %v", code, err))
				case wasKilled:
					after[u.ServedBy]++
					afterCalls++
				default:
					before[u.ServedBy]++
					beforeCalls++
				}
				mu.Unlock()
			}
		}(g)
	}
	wait := func(cond func() bool) {
		for deadline := time.Now().Add(20 * time.Second); !cond() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	count := func(n *int, min int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return *n >= min }
	}
	wait(count(&beforeCalls, 100))
	dead.kill()
	mu.Lock()
	killed = true
	mu.Unlock()
	wait(count(&afterCalls, 200))
	close(stop)
	wg.Wait()

	if len(failures) > 0 {
		return fmt.Errorf("users-0 killed: %d gateway calls failed, first: %s", len(failures), failures[0])
	}
	if before[dead.name] == 0 || before[survivor.name] == 0 {
		return fmt.Errorf("before the kill the calls went to %v, want both instances", before)
	}
	if afterCalls < 200 || after[dead.name] != 0 || after[survivor.name] != afterCalls {
		return fmt.Errorf("after the kill the calls went to %v, want all %d to %s", after, afterCalls, survivor.name)
	}
	c.step("GET /api/users/{id} → gRPC GetUser round-robin over users-0 and users-1 (%v); users-0 killed mid-run → "+
		"0 calls failed, the %d calls after it all answered by %s", before, afterCalls, survivor.name)
	return nil
}
