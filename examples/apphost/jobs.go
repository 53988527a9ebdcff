package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goaspire/goaspire/testserver"
)

// jobWorkers is how many worker replicas the jobs example runs.
const jobWorkers = 2

// jobsStack is the asynchronous-processing example: a RabbitMQ node, the
// jobs API and its worker replicas.
type jobsStack struct {
	rabbit  *testserver.RabbitMQ // nil when the environment names a broker
	conn    string               // the broker's connection string
	api     *service
	workers []*service
}

func (j *jobsStack) services() []*service {
	if j == nil || j.api == nil {
		return nil
	}
	return append([]*service{j.api}, j.workers...)
}

func (j *jobsStack) close() {
	if j != nil && j.rabbit != nil {
		j.rabbit.Close()
	}
}

// secrets adds the broker's password to the log check.
func (j *jobsStack) secrets(into map[string]string) map[string]string {
	if j != nil && j.rabbit != nil {
		into["RabbitMQ password"] = j.rabbit.Password()
	}
	return into
}

// startJobs starts (or takes from the environment) the broker, then the
// jobs API and its workers with what an AppHost injects. It returns nil
// without starting anything when rabbitmq-server is not installed and no
// broker is named.
func startJobs(ctx context.Context, out io.Writer, cfg config, st *stack, bin string) (*jobsStack, error) {
	j := &jobsStack{conn: lookupEnv(cfg.environ, "ConnectionStrings__messaging")}
	if j.conn == "" {
		fmt.Fprint(out, "· starting RabbitMQ ... ")
		var err error
		j.rabbit, err = testserver.StartRabbitMQ(ctx)
		if errors.Is(err, testserver.ErrBinaryNotFound) {
			fmt.Fprintln(out, "rabbitmq-server is not installed: the jobs example is skipped")
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		fmt.Fprintln(out, j.rabbit.Addr())
		j.conn = j.rabbit.URL()
	} else {
		fmt.Fprintln(out, "· using the RabbitMQ named by the environment")
	}
	mk := func(name, role string) (*service, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		env := injected{"PORT": strconv.Itoa(port), "JOBS_ROLE": role, "JOBS_INSTANCE": name}
		if role == "api" {
			// The scenario restarts the broker (15 s or more on a loaded
			// machine, then the client's reconnect backoff) and expects the
			// jobs posted meanwhile to wait for it rather than fail at the
			// default confirm timeout (20 s).
			env["Aspire__RabbitMQ__Client__PublishConfirmTimeout"] = "00:01:30"
		}
		env.connection("messaging", j.conn, amqpProperties)
		env.connection("db", st.res.primaryConn, postgresProperties)
		env.telemetry(cfg.environ, "jobs-"+role, name)
		return &service{name: name, binary: bin, port: port, env: env.environ(cfg.environ), logPath: filepath.Join(st.dir, name+".log")}, nil
	}
	var err error
	if j.api, err = mk("jobs-api", "api"); err != nil {
		return j, err
	}
	for i := range jobWorkers {
		w, err := mk("jobs-worker-"+strconv.Itoa(i), "worker")
		if err != nil {
			return j, err
		}
		j.workers = append(j.workers, w)
	}
	for _, s := range j.services() {
		if err := s.start(); err != nil {
			return j, err
		}
	}
	for _, s := range j.services() {
		if err := s.waitHealthy(ctx, 90*time.Second); err != nil {
			return j, err
		}
		fmt.Fprintf(out, "· %-12s healthy at %s\n", s.name, s.url())
	}
	return j, nil
}

// amqpProperties splits an amqp:// URL into Aspire 13's per-property
// variables (HOST, PORT, USERNAME, PASSWORD, URI).
func amqpProperties(connStr string) map[string]string {
	u, err := url.Parse(connStr)
	if err != nil {
		return nil
	}
	props := map[string]string{"HOST": u.Hostname(), "PORT": u.Port(), "URI": connStr}
	if u.User != nil {
		props["USERNAME"] = u.User.Username()
		props["PASSWORD"], _ = u.User.Password()
	}
	return props
}

// jobsSummary is GET /jobs/summary.
type jobsSummary struct {
	Jobs, Done, Effects, Processed, Amount, ExpectedTotal int64
}

// runJobsScenario posts jobsTotal jobs while it kills one worker mid-job
// and crashes and restarts RabbitMQ, then checks that every job completed
// once in effect, in the trace of the request that created it.
func runJobsScenario(ctx context.Context, out io.Writer, j *jobsStack) error {
	const jobsTotal = 500
	c := &client{http: &http.Client{Timeout: 90 * time.Second}, out: out}
	api := j.api.url()
	var before jobsSummary
	if _, err := c.do(ctx, http.MethodGet, api+"/jobs/summary", nil, nil, &before); err != nil {
		return err
	}

	type posted struct {
		id, traceID string
		input       int64
	}
	var (
		mu      sync.Mutex
		jobs    []posted
		postErr error
		count   atomic.Int64
		wg      sync.WaitGroup
	)
	next := make(chan int64)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for input := range next {
				traceID := randomHex(16)
				id, err := postJob(ctx, c.http, api, input, traceID)
				mu.Lock()
				if err != nil && postErr == nil {
					postErr = err
				}
				if err == nil {
					jobs = append(jobs, posted{id, traceID, input})
				}
				mu.Unlock()
				count.Add(1)
				time.Sleep(30 * time.Millisecond) // a steady stream, not one burst
			}
		}()
	}
	go func() {
		defer close(next)
		for i := range int64(jobsTotal) {
			select {
			case next <- i % 1000:
			case <-ctx.Done():
				return
			}
		}
	}()
	waitPosted := func(n int64) {
		for count.Load() < n && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}

	// A worker dies with jobs in hand: unacknowledged, they go to the
	// other worker.
	waitPosted(100)
	victim := j.workers[len(j.workers)-1]
	var vs struct{ Processed, Duplicates int64 }
	if _, err := c.do(ctx, http.MethodGet, victim.url()+"/stats", nil, nil, &vs); err != nil {
		return err
	}
	victim.kill()
	c.step("%s killed (SIGKILL) mid-stream, after processing %d jobs", victim.name, vs.Processed)

	// The broker crashes and comes back while jobs are being posted:
	// publishes wait for it, consumers resume.
	waitPosted(250)
	var taken struct{ Redelivered int64 }
	if _, err := c.do(ctx, http.MethodGet, j.workers[0].url()+"/stats", nil, nil, &taken); err != nil {
		return err
	}
	c.step("%s took over the %d jobs the dead worker had in hand, unacknowledged (redelivered by the broker)", j.workers[0].name, taken.Redelivered)
	var outage time.Duration
	if j.rabbit != nil {
		start := time.Now()
		if err := j.rabbit.Kill(); err != nil {
			return err
		}
		if err := j.rabbit.Start(ctx); err != nil {
			return err
		}
		outage = time.Since(start)
		c.step("RabbitMQ killed (SIGKILL) and restarted after %d posts; down for %s", count.Load(), outage.Round(100*time.Millisecond))
	}
	wg.Wait()
	if postErr != nil {
		return fmt.Errorf("posting jobs: %w", postErr)
	}
	if len(jobs) != jobsTotal {
		return fmt.Errorf("%d of %d jobs accepted", len(jobs), jobsTotal)
	}
	c.step("POST /process ×%d → 202 Accepted with Location: /jobs/{id} for every one", jobsTotal)

	var after jobsSummary
	if err := eventually(ctx, 2*time.Minute, "every job done", func() (bool, error) {
		if _, err := c.do(ctx, http.MethodGet, api+"/jobs/summary", nil, nil, &after); err != nil {
			return false, err
		}
		return after.Done-before.Done >= jobsTotal, nil
	}); err != nil {
		return fmt.Errorf("%w (summary %+v)", err, after)
	}
	var wantAmount int64
	for _, p := range jobs {
		wantAmount += p.input
	}
	done, effects := after.Done-before.Done, after.Effects-before.Effects
	processed, amount := after.Processed-before.Processed, after.Amount-before.Amount
	if done != jobsTotal || effects != jobsTotal || processed != jobsTotal || amount != wantAmount {
		return fmt.Errorf("after %d jobs: %d done, %d effects, %d processed, amount %d (want %d): a job was lost or applied twice",
			jobsTotal, done, effects, processed, amount, wantAmount)
	}

	// Each job's result, and the trace it ran in.
	sameTrace := 0
	for _, p := range jobs {
		var v struct {
			Status  string
			Result  *int64
			Worker  *string
			TraceID *string
		}
		code, err := c.do(ctx, http.MethodGet, api+"/jobs/"+p.id, nil, nil, &v)
		if err != nil || code != http.StatusOK || v.Status != "done" || v.Result == nil || *v.Result != sumSquares(p.input) {
			return fmt.Errorf("GET /jobs/%s: status %d, %+v, %v", p.id, code, v, err)
		}
		if v.TraceID != nil && *v.TraceID == p.traceID {
			sameTrace++
		}
	}
	if sameTrace != jobsTotal {
		return fmt.Errorf("%d of %d jobs were processed in the trace of the request that created them", sameTrace, jobsTotal)
	}
	var survivor struct{ Processed, Duplicates int64 }
	if _, err := c.do(ctx, http.MethodGet, j.workers[0].url()+"/stats", nil, nil, &survivor); err != nil {
		return err
	}
	c.step("all %d jobs done, none lost: %d effects applied once each (total %d as expected); "+
		"%s absorbed %d repeated deliveries idempotently", jobsTotal, effects, amount, j.workers[0].name, survivor.Duplicates)
	c.step("GET /jobs/{id} ×%d → done with the right result; each processed by a worker in the trace of its POST (traceparent → message headers → consumer span)", jobsTotal)
	return nil
}

// postJob posts one job with its own W3C trace context and returns the id
// from the Location header.
func postJob(ctx context.Context, hc *http.Client, api string, input int64, traceID string) (string, error) {
	body, _ := json.Marshal(map[string]int64{"input": input})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+"/process", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+randomHex(8)+"-01")
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, "/jobs/") {
		return "", fmt.Errorf("POST /process: status %d, Location %q: %s", resp.StatusCode, loc, raw)
	}
	return strings.TrimPrefix(loc, "/jobs/"), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sumSquares is the jobs' computation, to check their results.
func sumSquares(n int64) int64 {
	var sum int64
	for i := int64(1); i <= n; i++ {
		sum += i * i
	}
	return sum
}
