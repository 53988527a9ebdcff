package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/goaspire/goaspire/internal/fallback"
	"github.com/goaspire/goaspire/internal/redact"
)

// RedisLogger sends go-redis's own log lines to a slog.Logger. go-redis
// writes them (failed dials, Sentinel failovers, pool hook failures) to
// stderr through one process-wide logger, outside slog and OpenTelemetry;
// install this one with
//
//	redis.SetLogger(cache.RedisLogger{Logger: logger})
//
// integrations/aspireredis does so with the App's logger when an App that
// is not made WithoutGlobals opens a Redis client. A line is logged at Info when it reports a Sentinel
// choosing or finding a server ("sentinel: new master=..."), else at Warn,
// with the attribute component=go-redis; URL passwords and secret
// key=value pairs in it are masked. A nil Logger means slog.Default().
type RedisLogger struct {
	Logger *slog.Logger
}

// Printf implements go-redis's logging interface.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	logger := fallback.Logger(l.Logger)
	if ctx == nil {
		ctx = context.Background()
	}
	msg := fmt.Sprintf(format, v...)
	level := slog.LevelWarn
	switch {
	case isRedisInfo(msg):
		level = slog.LevelInfo
	case isRedisDebug(msg):
		level = slog.LevelDebug
	}
	if !logger.Enabled(ctx, level) {
		return
	}
	logger.Log(ctx, level, redact.Text(msg), "component", "go-redis")
}

// redisInfoPrefixes start the go-redis lines that report normal operation
// rather than a failure.
var redisInfoPrefixes = []string{
	"sentinel: new master=",
	"sentinel: selected addr=",
	"sentinel: discovered new sentinel=",
}

func isRedisInfo(msg string) bool {
	for _, p := range redisInfoPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// isRedisDebug reports whether msg is one go-redis logs in normal
// operation: the pool skipping a connection that waits for its
// re-authentication after a credentials refresh (several per refresh).
func isRedisDebug(msg string) bool {
	return strings.HasPrefix(msg, "redis: connection pool: conn[") && strings.HasSuffix(msg, "] rejected by hook, returning to pool")
}
