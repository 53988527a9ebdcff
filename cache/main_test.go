package cache

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// go-redis's re-authentication workers (one per connection marked
	// after a credentials refresh) may outlive the client's Close by up to
	// its PoolTimeout, waiting for a connection that was closed.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/auth/streaming.(*ReAuthPoolHook).OnPut.func1"))
}
