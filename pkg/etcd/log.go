package etcd

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore routes etcd's zap logger into bramble's slog logger: etcd's
// info lines are debug lines (shown with --debug), its warnings and errors
// stay so; nothing once the member is being stopped (etcd logs its own
// listeners closing as errors).
type slogCore struct {
	log      *slog.Logger
	fields   []zapcore.Field
	stopping *atomic.Bool
}

func newZapLogger(log *slog.Logger, stopping *atomic.Bool) *zap.Logger {
	return zap.New(&slogCore{log: log, stopping: stopping})
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return !c.stopping.Load() && c.log.Enabled(context.Background(), slogLevel(l))
}

// advice are etcd warnings at every start about choices bramble made on
// purpose: shown with --debug only.
var advice = map[string]bool{
	// Only the local apiserver connects, over gRPC.
	"Running http and grpc server on single port. This is not recommended for production.": true,
	// etcd's authentication is off: client certificates guard the client URL.
	"simple token is not cryptographically signed": true,
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	out := *c
	out.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	return &out
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field(nil), c.fields...), fields...) {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	attrs = append(attrs, slog.String("src", "etcd"))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	level := slogLevel(e.Level)
	if advice[e.Message] {
		level = slog.LevelDebug
	}
	c.log.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
