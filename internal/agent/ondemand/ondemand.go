// Package ondemand answers the proxy's on-demand profile requests (the
// ExtStreamProfiles extension of this project): it fetches one profile from
// the node's pprof listener (--node-pprof-addr) and streams it back in
// chunks.
package ondemand

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Profile types and their pprof paths.
var paths = map[string]string{
	"cpu":       "/debug/pprof/profile",
	"trace":     "/debug/pprof/trace",
	"heap":      "/debug/pprof/heap",
	"allocs":    "/debug/pprof/allocs",
	"goroutine": "/debug/pprof/goroutine",
	"mutex":     "/debug/pprof/mutex",
	"block":     "/debug/pprof/block",
}

// Timed reports whether a profile type runs for a duration (cpu, trace).
func Timed(typ string) bool { return typ == "cpu" || typ == "trace" }

// Known reports whether typ is a profile type.
func Known(typ string) bool { _, ok := paths[typ]; return ok }

// Defaults.
const (
	// MaxSeconds bounds a cpu or trace profile.
	MaxSeconds = 300
	// DefaultSeconds is a cpu or trace profile's duration when none is
	// given.
	DefaultSeconds = 5
	// fetchSlack is added to a profile's duration for its HTTP request.
	fetchSlack = 30 * time.Second
	// ChunkSize is the size of one chunk sent to the proxy.
	ChunkSize = 256 << 10
)

// ErrNoAddr is the refusal of an agent without a pprof address.
const ErrNoAddr = "node has no pprof address: the agent runs without --node-pprof-addr"

// Profiler fetches profiles of the node.
type Profiler struct {
	// Addr is the node's pprof listener, host:port; empty refuses every
	// request with ErrNoAddr.
	Addr string
	// Client makes the requests (default: a plain client).
	Client *http.Client
}

// URL returns the pprof URL of a profile, or an error for a bad request.
func (p *Profiler) URL(typ string, seconds uint32) (string, error) {
	path, ok := paths[typ]
	if !ok {
		return "", fmt.Errorf("unknown profile type %q", typ)
	}
	if p.Addr == "" {
		return "", fmt.Errorf("%s", ErrNoAddr)
	}
	u := "http://" + p.Addr + path
	if Timed(typ) {
		if seconds == 0 {
			seconds = DefaultSeconds
		}
		if seconds > MaxSeconds {
			return "", fmt.Errorf("seconds %d above the maximum of %d", seconds, MaxSeconds)
		}
		u += "?seconds=" + strconv.FormatUint(uint64(seconds), 10)
	}
	return u, nil
}

// Answer serves one command: a refusal, or an acceptance followed by the
// profile's chunks, the last one marked (with the error when the fetch
// failed). It returns when the profile is sent, send fails or ctx ends.
func (p *Profiler) Answer(ctx context.Context, cmd *fodcv1.ExtProfileCommand, send func(*fodcv1.ExtProfileRequest) error) {
	id := cmd.GetRequestId()
	u, err := p.URL(cmd.GetType(), cmd.GetSeconds())
	if err != nil {
		_ = send(&fodcv1.ExtProfileRequest{RequestId: id, Error: err.Error(), Last: true})
		return
	}
	if send(&fodcv1.ExtProfileRequest{RequestId: id, Accepted: true, Source: u}) != nil {
		return
	}
	fail := func(err error) { _ = send(&fodcv1.ExtProfileRequest{RequestId: id, Error: err.Error(), Last: true}) }
	timeout := fetchSlack
	if Timed(cmd.GetType()) {
		timeout += time.Duration(max(cmd.GetSeconds(), DefaultSeconds)) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		fail(err)
		return
	}
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		fail(fmt.Errorf("fetch %s: %w", u, err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		fail(fmt.Errorf("fetch %s: %s: %s", u, resp.Status, body))
		return
	}
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			fail(fmt.Errorf("read %s: %w", u, err))
			return
		}
		if send(&fodcv1.ExtProfileRequest{RequestId: id, Data: append([]byte(nil), buf[:n]...), Last: last}) != nil || last {
			return
		}
	}
}
