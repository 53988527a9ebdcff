package cache

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestFlightReusesOnlyUnsharedCalls: a call another caller joined, or
// whose load goes on in the background, is never handed to a new leader,
// so a caller reading its result never sees another key's.
func TestFlightReusesOnlyUnsharedCalls(t *testing.T) {
	tests := []struct {
		name   string
		joined bool
		async  bool
	}{
		{"joined", true, false},
		{"async", false, true},
		{"joined and async", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f flight[int]
			c, leader := f.join("a")
			if !leader {
				t.Fatal("first join is not the leader")
			}
			if tt.joined {
				if j, l := f.join("a"); l || j != c {
					t.Fatal("second join did not join the first call")
				}
			}
			c.async = tt.async
			f.finish("a", c, 1, nil)
			f.release(c)
			for range 100 {
				n, _ := f.join("b")
				if n == c {
					t.Fatal("a shared call was reused")
				}
				f.finish("b", n, 2, nil)
			}
			if v, err := f.wait(context.Background(), c); v != 1 || err != nil {
				t.Errorf("the first call's result is now %d, %v; want 1", v, err)
			}
		})
	}
}

func TestAppliesContextDeadlines(t *testing.T) {
	tests := []struct {
		name string
		rdb  redis.UniversalClient
		want bool
	}{
		{"client with context timeouts", redis.NewClient(&redis.Options{ContextTimeoutEnabled: true}), true},
		{"client without", redis.NewClient(&redis.Options{}), false},
		{"cluster with context timeouts", redis.NewClusterClient(&redis.ClusterOptions{ContextTimeoutEnabled: true}), true},
		{"ring", redis.NewRing(&redis.RingOptions{}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.rdb.Close()
			if got := appliesContextDeadlines(tt.rdb); got != tt.want {
				t.Errorf("appliesContextDeadlines = %v, want %v", got, tt.want)
			}
		})
	}
}
