package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// demoSettings are configuration values the launcher passes so the demo's
// background loops run at demo speed. Everything else is the default.
var demoSettings = map[string]map[string]string{
	"catalog": {
		// Check replicas every 500 ms instead of every few seconds.
		"Aspire__Npgsql__db__Replicas__CheckInterval": "00:00:00.5",
	},
	"gateway": {
		// Retry after 100 ms instead of 2 s, so a dead instance costs
		// little time in the scenario.
		"Aspire__Resilience__Http__Retry__Delay": "00:00:00.1",
		// Judge an instance after 5 calls instead of 100, so the demo's
		// few requests are enough to open a dead instance's circuit.
		"Aspire__Resilience__Http__CircuitBreaker__MinimumThroughput": "5",
	},
}

type product struct {
	ID    int64   `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
	Stock int     `json:"stock"`
}

type order struct {
	ID        int64   `json:"id"`
	ProductID int64   `json:"productId"`
	Quantity  int     `json:"quantity"`
	Total     float64 `json:"total"`
}

type cacheStats struct {
	L1Hits, L1Misses, L2Hits, L2Misses int64
	Loads, LoadErrors, LoadNotFound    int64
	StaleServed, InvalidationsReceived int64
	PositionLoads                      int64
	Reconnects, L2Errors, BreakerTrips int64
	BreakerOpen                        bool
}

type replicaStatus struct {
	Name       string
	InRotation bool
	Reason     string
}

type readStats struct {
	Replica, Fallback, ReadYourWrites, NoReplicas, Refused int64
	// MinLSN counts reads sent to the primary because no replica had
	// replayed the write behind a cache invalidation.
	MinLSN int64 `json:"minLSN"`
}

func (r readStats) primary() int64 {
	return r.Fallback + r.ReadYourWrites + r.NoReplicas + r.Refused + r.MinLSN
}

type catalogStats struct {
	Instance string          `json:"instance"`
	Cache    cacheStats      `json:"cache"`
	Replicas []replicaStatus `json:"replicas"`
	Reads    readStats       `json:"reads"`
	Events   struct {
		Received int64    `json:"received"`
		Recent   []string `json:"recent"`
	} `json:"events"`
}

// reads says where the database reads between two snapshots went.
func reads(before, after catalogStats) string {
	return fmt.Sprintf("database reads: %d on the replica, %d on the primary",
		after.Reads.Replica-before.Reads.Replica, after.Reads.primary()-before.Reads.primary())
}

// client talks to the services the way a person with curl would.
type client struct {
	http *http.Client
	out  io.Writer
}

func (c *client) do(ctx context.Context, method, url string, body any, header map[string]string, into any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if into != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, into); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decoding %q: %w", method, url, raw, err)
		}
	}
	return resp.StatusCode, nil
}

func (c *client) stats(ctx context.Context, s *service) (catalogStats, error) {
	var st catalogStats
	code, err := c.do(ctx, http.MethodGet, s.url()+"/stats", nil, nil, &st)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET %s/stats: status %d", s.name, code)
	}
	return st, err
}

func (c *client) getProduct(ctx context.Context, base string, id int64) (product, int, error) {
	var p product
	code, err := c.do(ctx, http.MethodGet, base+"/products/"+strconv.FormatInt(id, 10), nil, nil, &p)
	return p, code, err
}

func (c *client) step(format string, args ...any) {
	fmt.Fprintf(c.out, "  ✓ "+format+"\n", args...)
}

// eventually polls cond until it is true or the timeout passes.
func eventually(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("%s: not within %s: %w", what, timeout, err)
			}
			return fmt.Errorf("%s: not within %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func delta(before, after cacheStats) string {
	var parts []string
	add := func(name string, b, a int64) {
		if a != b {
			parts = append(parts, fmt.Sprintf("%s +%d", name, a-b))
		}
	}
	add("L1 hits", before.L1Hits, after.L1Hits)
	add("L2 hits", before.L2Hits, after.L2Hits)
	add("loads", before.Loads, after.Loads)
	add("stale served", before.StaleServed, after.StaleServed)
	add("invalidations received", before.InvalidationsReceived, after.InvalidationsReceived)
	add("Redis errors", before.L2Errors, after.L2Errors)
	if len(parts) == 0 {
		return "no cache activity"
	}
	return strings.Join(parts, ", ")
}

// runScenario drives the stack and checks what it answers. Each step prints
// one line; the first broken expectation ends it with an error.
func runScenario(ctx context.Context, out io.Writer, st *stack) error {
	c := &client{http: &http.Client{Timeout: 10 * time.Second}, out: out}
	cat0, cat1 := st.catalogs[0], st.catalogs[1]
	gw := st.gateway.url() + "/api"

	// 1. A write through the gateway, which finds the catalog by name.
	var p product
	code, err := c.do(ctx, http.MethodPut, gw+"/products/1", map[string]any{
		"name": "Espresso machine", "description": "15 bar", "price": 199.0, "stock": 10,
	}, nil, &p)
	if err != nil || code != http.StatusOK || p.Price != 199 {
		return fmt.Errorf("PUT product 1 through the gateway: status %d, %+v, %v", code, p, err)
	}
	c.step("PUT  /api/products/1 on the gateway → https+http://catalog resolved by discovery → 200, price %.2f", p.Price)

	// 2. Reads: the PUT invalidated the product; the first read loads it
	// into L2 (or finds it there), the next come from L1.
	for _, s := range []*service{cat0, cat1} {
		before, err := c.stats(ctx, s)
		if err != nil {
			return err
		}
		for i := 0; i < 3; i++ {
			got, code, err := c.getProduct(ctx, s.url(), 1)
			if err != nil || code != http.StatusOK || got.Price != 199 {
				return fmt.Errorf("GET product 1 on %s: status %d, %+v, %v", s.name, code, got, err)
			}
		}
		after, err := c.stats(ctx, s)
		if err != nil {
			return err
		}
		if after.Cache.L1Hits-before.Cache.L1Hits < 2 {
			return fmt.Errorf("%s: 3 reads gave only %d L1 hits", s.name, after.Cache.L1Hits-before.Cache.L1Hits)
		}
		c.step("GET  /products/1 ×3 on %s → 200 each; cache: %s", s.name, delta(before.Cache, after.Cache))
	}

	// 3. A change on one instance reaches the other's L1 through Redis
	// pub/sub.
	before1, _ := c.stats(ctx, cat1)
	code, err = c.do(ctx, http.MethodPut, cat0.url()+"/products/1", map[string]any{
		"name": "Espresso machine", "description": "15 bar", "price": 179.0, "stock": 10,
	}, nil, &p)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("PUT product 1 on catalog-0: status %d, %v", code, err)
	}
	if err := eventually(ctx, 5*time.Second, "catalog-1 sees the new price", func() (bool, error) {
		got, _, err := c.getProduct(ctx, cat1.url(), 1)
		return got.Price == 179, err
	}); err != nil {
		return err
	}
	after1, _ := c.stats(ctx, cat1)
	c.step("PUT  price 179 on catalog-0 → catalog-1 serves 179 at once; its cache: %s", delta(before1.Cache, after1.Cache))

	// 4. A read the cache does not have goes to the replica.
	before0, _ := c.stats(ctx, cat0)
	code, err = c.do(ctx, http.MethodPut, cat1.url()+"/products/2", map[string]any{
		"name": "Grinder", "price": 89.5, "stock": 5,
	}, nil, nil)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("PUT product 2: status %d, %v", code, err)
	}
	var apiErr struct {
		Error struct {
			Code       string    `json:"code"`
			Message    string    `json:"message"`
			StatusCode int       `json:"statusCode"`
			Timestamp  time.Time `json:"timestamp"`
		} `json:"error"`
	}
	code, err = c.do(ctx, http.MethodGet, cat0.url()+"/products/404404", nil, nil, &apiErr)
	if err != nil || code != http.StatusNotFound || apiErr.Error.Code != "not_found" ||
		apiErr.Error.StatusCode != http.StatusNotFound || apiErr.Error.Timestamp.IsZero() {
		return fmt.Errorf("GET a missing product: status %d, %+v, %v", code, apiErr, err)
	}
	after0, _ := c.stats(ctx, cat0)
	if after0.Reads.Replica <= before0.Reads.Replica {
		return fmt.Errorf("the read of a product not in the cache did not go to the replica: %s", reads(before0, after0))
	}
	c.step("GET  /products/404404 on catalog-0 → 404 {\"error\": {\"code\": %q, ...}}; %s; cache: %s",
		apiErr.Error.Code, reads(before0, after0), delta(before0.Cache, after0.Cache))

	// 5. Orders: a transaction on the primary, safe to retry with an
	// Idempotency-Key.
	var o1, o2 order
	key := map[string]string{"Idempotency-Key": "scenario-order-1"}
	code, err = c.do(ctx, http.MethodPost, gw+"/orders", map[string]any{"productId": 1, "quantity": 2}, key, &o1)
	if err != nil || code != http.StatusCreated || o1.Total != 358 {
		return fmt.Errorf("POST an order: status %d, %+v, %v", code, o1, err)
	}
	code, err = c.do(ctx, http.MethodPost, gw+"/orders", map[string]any{"productId": 1, "quantity": 2}, key, &o2)
	if err != nil || code != http.StatusOK || o2.ID != o1.ID {
		return fmt.Errorf("POST the same order again: status %d, %+v, %v", code, o2, err)
	}
	got, _, _ := c.getProduct(ctx, gw, 1)
	if got.Stock != 8 {
		return fmt.Errorf("after one order of 2 the stock is %d, want 8", got.Stock)
	}
	c.step("POST /api/orders (2 × product 1) → 201, total %.2f; the same Idempotency-Key again → 200, same order %d; stock 8", o1.Total, o1.ID)

	if !st.res.owned() {
		fmt.Fprintln(out, "  · the fault steps are skipped: the servers were given, not started here")
	} else {
		if err := redisOutage(ctx, c, st); err != nil {
			return err
		}
		if err := replicaLag(ctx, c, st); err != nil {
			return err
		}
		if err := replicaOutage(ctx, c, st); err != nil {
			return err
		}
	}
	return instanceOutage(ctx, c, st)
}

// redisOutage kills Redis under load: every request must still succeed,
// served from L1 and the database, and the cache must heal by itself.
func redisOutage(ctx context.Context, c *client, st *stack) error {
	healed := st.beginFault("Redis outage")
	if err := st.res.redis.Kill(); err != nil {
		return err
	}
	before, _ := c.stats(ctx, st.catalogs[0])
	ok := 0
	for i := 0; i < 40; i++ {
		s := st.catalogs[i%2]
		_, code, err := c.getProduct(ctx, s.url(), int64(1+i%2))
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("with Redis down, GET on %s: status %d, %v", s.name, code, err)
		}
		ok++
	}
	after, _ := c.stats(ctx, st.catalogs[0])
	c.step("Redis killed → %d/40 reads answered 200 (L1 and the database); catalog-0 cache: %s; breaker open: %v",
		ok, delta(before.Cache, after.Cache), after.Cache.BreakerOpen)

	if err := st.res.redis.Start(ctx); err != nil {
		return err
	}
	// Healed: a write reaches Redis again and the other instance hears of it.
	if err := eventually(ctx, 20*time.Second, "the cache uses Redis again", func() (bool, error) {
		b1, err := c.stats(ctx, st.catalogs[1])
		if err != nil {
			return false, err
		}
		code, err := c.do(ctx, http.MethodPut, st.catalogs[0].url()+"/products/2", map[string]any{
			"name": "Grinder", "price": 89.5, "stock": 5,
		}, nil, nil)
		if err != nil || code != http.StatusOK {
			return false, err
		}
		time.Sleep(200 * time.Millisecond)
		a1, err := c.stats(ctx, st.catalogs[1])
		return err == nil && a1.Cache.InvalidationsReceived > b1.Cache.InvalidationsReceived, err
	}); err != nil {
		return err
	}
	healed()
	s0, _ := c.stats(ctx, st.catalogs[0])
	c.step("Redis restarted → the cache healed by itself (breaker open: %v, L1 flushes after reconnect: %d) and invalidations flow again",
		s0.Cache.BreakerOpen, s0.Cache.Reconnects)
	return nil
}

// replicaLag pauses the replica's replay: a PUT on one instance is then
// on the primary only, and a GET on the other, whose load follows the
// PUT's invalidation, must read the new price from the primary rather
// than put the replica's old row back into the cache.
func replicaLag(ctx context.Context, c *client, st *stack) error {
	cat0, cat1 := st.catalogs[0], st.catalogs[1]
	if _, _, err := c.getProduct(ctx, cat1.url(), 1); err != nil { // cached on catalog-1
		return err
	}
	if err := st.res.replica.PauseReplay(ctx); err != nil {
		return err
	}
	defer func() { _ = st.res.replica.ResumeReplay(context.WithoutCancel(ctx)) }()
	before, err := c.stats(ctx, cat1)
	if err != nil {
		return err
	}
	code, err := c.do(ctx, http.MethodPut, cat0.url()+"/products/1", map[string]any{
		"name": "Espresso machine", "description": "15 bar", "price": 169.0, "stock": 8,
	}, nil, nil)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("PUT product 1 on catalog-0 with replay paused: status %d, %v", code, err)
	}
	// catalog-1 serves its L1 copy until the invalidation reaches it (a
	// few milliseconds); then it loads: the new price, or the replica's
	// old row cached for the TTL.
	var got product
	if err := eventually(ctx, 5*time.Second, "catalog-1 sees the new price with the replica behind", func() (bool, error) {
		var err error
		got, _, err = c.getProduct(ctx, cat1.url(), 1)
		return got.Price == 169, err
	}); err != nil {
		return fmt.Errorf("%w (it serves %.2f)", err, got.Price)
	}
	after, err := c.stats(ctx, cat1)
	if err != nil {
		return err
	}
	if after.Cache.PositionLoads <= before.Cache.PositionLoads {
		return fmt.Errorf("catalog-1's load did not carry the write's position: cache %s", delta(before.Cache, after.Cache))
	}
	c.step("replica replay paused → PUT price 169 on catalog-0 → catalog-1 serves 169: its load required the write's position and %s (%d because no replica had replayed it)",
		reads(before, after), after.Reads.MinLSN-before.Reads.MinLSN)
	if err := st.res.replica.ResumeReplay(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := st.res.replica.WaitCaughtUp(wctx); err != nil {
		return err
	}
	if err := eventually(ctx, 30*time.Second, "the replica is in rotation again", func() (bool, error) {
		s, err := c.stats(ctx, cat1)
		return err == nil && len(s.Replicas) > 0 && s.Replicas[0].InRotation, err
	}); err != nil {
		return err
	}
	c.step("replay resumed → the replica caught up and is in rotation")
	return nil
}

// replicaOutage kills the read replica: reads go on, served by the
// primary, and the replica comes back into rotation after a restart.
func replicaOutage(ctx context.Context, c *client, st *stack) error {
	healed := st.beginFault("replica outage")
	if err := st.res.replica.Kill(); err != nil {
		return err
	}
	before, _ := c.stats(ctx, st.catalogs[0])
	for i := 0; i < 20; i++ {
		// Missing ids are never in the cache for long: each read reaches the database.
		_, code, err := c.getProduct(ctx, st.catalogs[i%2].url(), int64(900000+i))
		if err != nil || code != http.StatusNotFound {
			return fmt.Errorf("with the replica down, GET on %s: status %d, %v", st.catalogs[i%2].name, code, err)
		}
	}
	if err := eventually(ctx, 10*time.Second, "the replica leaves rotation", func() (bool, error) {
		s, err := c.stats(ctx, st.catalogs[0])
		return err == nil && len(s.Replicas) > 0 && !s.Replicas[0].InRotation, err
	}); err != nil {
		return err
	}
	s, _ := c.stats(ctx, st.catalogs[0])
	reason, _, _ := strings.Cut(s.Replicas[0].Reason, ":")
	c.step("replica killed → 20/20 reads answered, none failed; catalog-0 %s; replica out of rotation (%s)", reads(before, s), reason)

	if err := st.res.replica.Start(ctx); err != nil {
		return err
	}
	if err := eventually(ctx, 30*time.Second, "the replica returns to rotation", func() (bool, error) {
		s, err := c.stats(ctx, st.catalogs[0])
		return err == nil && len(s.Replicas) > 0 && s.Replicas[0].InRotation, err
	}); err != nil {
		return err
	}
	healed()
	before, _ = c.stats(ctx, st.catalogs[0])
	if _, code, err := c.getProduct(ctx, st.catalogs[0].url(), 900100); err != nil || code != http.StatusNotFound {
		return fmt.Errorf("after the replica restarted, GET: status %d, %v", code, err)
	}
	after, _ := c.stats(ctx, st.catalogs[0])
	if after.Reads.Replica <= before.Reads.Replica {
		return fmt.Errorf("after the replica returned, a read did not go to it: %s", reads(before, after))
	}
	c.step("replica restarted → back in rotation; %s", reads(before, after))
	return nil
}

// instanceOutage kills one catalog instance: the gateway's resilience
// pipeline retries on the other instance and opens the dead one's circuit.
func instanceOutage(ctx context.Context, c *client, st *stack) error {
	dead := st.catalogs[0]
	st.beginFault(dead.name + " killed") // until the end
	dead.kill()
	var timings [2]time.Duration
	for half := 0; half < 2; half++ {
		start := time.Now()
		for i := 0; i < 10; i++ {
			got, code, err := c.getProduct(ctx, st.gateway.url()+"/api", 1)
			if err != nil || code != http.StatusOK || got.ID != 1 {
				return fmt.Errorf("with %s down, GET through the gateway: status %d, %v", dead.name, code, err)
			}
		}
		timings[half] = time.Since(start)
	}
	var gs struct {
		Circuits map[string]string `json:"circuits"`
	}
	if _, err := c.do(ctx, http.MethodGet, st.gateway.url()+"/stats", nil, nil, &gs); err != nil {
		return err
	}
	deadHost := strings.TrimPrefix(dead.url(), "http://")
	state := gs.Circuits[deadHost]
	if state == "" || state == "closed" {
		return fmt.Errorf("after 20 calls with %s down its circuit is %q (all: %v)", dead.name, state, gs.Circuits)
	}
	c.step("%s killed → 20/20 reads through the gateway answered 200: the first 10 in %s (retried on catalog-1), "+
		"then its circuit was %s and the next 10 took %s", dead.name,
		timings[0].Round(time.Millisecond), state, timings[1].Round(time.Millisecond))
	return nil
}
