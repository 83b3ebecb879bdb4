package etcd

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore routes etcd's zap logger into bramble's slog logger: warnings
// and errors by default (info with --debug), nothing once the member is
// being stopped (etcd logs its own listeners closing as errors).
type slogCore struct {
	log      *slog.Logger
	min      zapcore.Level
	fields   []zapcore.Field
	stopping *atomic.Bool
}

func newZapLogger(log *slog.Logger, debug bool, stopping *atomic.Bool) *zap.Logger {
	min := zapcore.WarnLevel
	if debug {
		min = zapcore.InfoLevel
	}
	return zap.New(&slogCore{log: log, min: min, stopping: stopping})
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min && !c.stopping.Load() }

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
	level := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		level = slog.LevelWarn
	case e.Level < zapcore.InfoLevel:
		level = slog.LevelDebug
	}
	c.log.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
