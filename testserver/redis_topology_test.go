package testserver

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// poll retries cond for up to a minute, a bound against hangs rather than a
// timed assertion.
func poll(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedisReplicaAndSentinel(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	primary := NewRedis(t)
	replica := primary.NewReplica(t)
	sentinel := primary.NewSentinel(t, "mymaster")

	if replica.Password() != primary.Password() || sentinel.Password() != primary.Password() {
		t.Error("replica and sentinel do not share the primary's password")
	}
	if got, want := sentinel.ConnectionString(), fmt.Sprintf("127.0.0.1:%d,serviceName=mymaster,password=%s", sentinel.Port(), primary.Password()); got != want {
		t.Errorf("sentinel ConnectionString() = %q, want %q", got, want)
	}
	for _, s := range []*Redis{replica, sentinel} {
		for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
			if got := fmt.Sprintf(format, s); strings.Contains(got, s.Password()) || !strings.Contains(got, s.Addr()) {
				t.Errorf("Sprintf(%q) = %q: reveals the password or lacks the address", format, got)
			}
		}
	}
	if s := sentinel.String(); !strings.HasPrefix(s, "redis sentinel ") {
		t.Errorf("sentinel String() = %q", s)
	}

	if err := newClient(t, primary).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	rc := newClient(t, replica)
	poll(t, "replica has the primary's data", func() error {
		v, err := rc.Get(ctx, "k").Result()
		if err == nil && v != "v" {
			err = fmt.Errorf("GET k = %q", v)
		}
		return err
	})
	if err := rc.Set(ctx, "k", "w", 0).Err(); err == nil || !strings.Contains(err.Error(), "READONLY") {
		t.Errorf("write to the replica: %v, want READONLY", err)
	}

	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr(), Password: sentinel.Password(), MaxRetries: -1})
	defer sc.Close()
	addr, err := sc.GetMasterAddrByName(ctx, "mymaster").Result()
	if err != nil || len(addr) != 2 || addr[1] != strconv.Itoa(primary.Port()) {
		t.Fatalf("sentinel's primary = %v, %v; want port %d", addr, err, primary.Port())
	}
	poll(t, "sentinel knows the replica", func() error {
		reps, err := sc.Replicas(ctx, "mymaster").Result()
		if err == nil && len(reps) != 1 {
			err = fmt.Errorf("%d replicas", len(reps))
		}
		return err
	})
	if _, err := primary.StartSentinel(ctx, "bad name"); err == nil {
		t.Error("StartSentinel accepted a service name with a space")
	}
}

func TestRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := NewRedisCluster(t, 3)

	nodes := c.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("%d nodes", len(nodes))
	}
	want := ""
	for _, n := range nodes {
		want += n.Addr() + ","
	}
	if got := c.ConnectionString(); got != want+"password="+c.Password() {
		t.Errorf("ConnectionString() = %q", got)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(format, c); strings.Contains(s, c.Password()) || !strings.Contains(s, nodes[2].Addr()) {
			t.Errorf("Sprintf(%q) = %q: reveals the password or lacks a node", format, s)
		}
	}

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].Addr()}, Password: c.Password()})
	defer cc.Close()
	for i := range 30 {
		if err := cc.Set(ctx, "key"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Every node holds some of the keys: the slots are spread.
	for _, n := range nodes {
		count, err := n.command(ctx, "DBSIZE")
		if err != nil || count == "0" {
			t.Errorf("%s: DBSIZE = %s, %v; want keys on every node", n, count, err)
		}
	}

	dirs := make([]string, len(nodes))
	for i, n := range nodes {
		dirs[i] = n.dir
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v", d, err)
		}
	}
	for _, bad := range []struct {
		n    int
		opts []RedisOption
	}{{2, nil}, {3, []RedisOption{WithRedisPort(nodes[0].Port())}}, {3, []RedisOption{WithRedisTLS()}}} {
		if c, err := StartRedisCluster(ctx, bad.n, bad.opts...); err == nil {
			c.Close()
			t.Errorf("StartRedisCluster(%d, %d options) succeeded", bad.n, len(bad.opts))
		}
	}
}
