package aspireredis

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/servicedefaults"
)

// go-redis reads its process-wide logger without synchronization, so it
// is set once, by the first open of a Redis client by an App that installs
// the globals (in a service, before any Redis client exists); later opens
// only change where it forwards to.
var (
	redisLogOnce   sync.Once
	redisLogTarget atomic.Pointer[slog.Logger]
)

// routeRedisLogger points go-redis's process-wide logger at h's logger,
// when h installs the globals.
func routeRedisLogger(h servicedefaults.Host) {
	if !h.UsesGlobals() {
		return
	}
	redisLogTarget.Store(h.ComponentLogger(scope))
	redisLogOnce.Do(func() { redis.SetLogger(redisLogForwarder{}) })
}

// redisLogForwarder is the go-redis logger routeRedisLogger installs.
type redisLogForwarder struct{}

func (redisLogForwarder) Printf(ctx context.Context, format string, v ...any) {
	cache.RedisLogger{Logger: redisLogTarget.Load()}.Printf(ctx, format, v...)
}
