// Package logging builds the slog logger of the binaries from flags.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// Config selects the log level and format.
type Config struct {
	Level  string
	Format string
}

// RegisterFlags binds --log-level and --log-format.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Level, "log-level", "info", "Log level: debug, info, warn or error.")
	fs.StringVar(&c.Format, "log-format", "text", "Log format: text or json.")
}

// New returns a logger writing to w.
func (c *Config) New(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: want text or json", c.Format)
}
