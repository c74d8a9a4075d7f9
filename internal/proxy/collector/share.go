package collector

import (
	"sync"
	"weak"

	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// sharer decodes and enriches each distinct reply once. Identical
// concurrent requests to an agent share one command (agentsvc coalesces
// them), so their callers receive the very same reply; the first one
// decodes it and the others wait for and reuse its Batch (or its error),
// which is only read afterwards. An entry lives while a collection that
// uses it runs: nothing is kept after the last one ends. Replies are keyed
// by weak pointers, so that a reply's bytes are garbage as soon as it is
// decoded. It is safe for concurrent use.
type sharer struct {
	mu    sync.Mutex // guards calls and every call's refs
	calls map[weak.Pointer[agentsvc.RawMetrics]]*enrichCall
}

type enrichCall struct {
	done  chan struct{}
	batch series.Batch // written before done is closed
	err   error        // likewise
	refs  int          // collections holding the entry
}

func newSharer() *sharer {
	return &sharer{calls: make(map[weak.Pointer[agentsvc.RawMetrics]]*enrichCall)}
}

// batch returns enrich's result for reply, running enrich only if no
// running collection has enriched the same reply. The caller must call
// release once its collection is over, also when err is not nil.
func (s *sharer) batch(reply *agentsvc.RawMetrics, enrich func() (series.Batch, error)) (b series.Batch, release func(), err error) {
	key := weak.Make(reply)
	s.mu.Lock()
	c, ok := s.calls[key]
	if !ok {
		c = &enrichCall{done: make(chan struct{})}
		s.calls[key] = c
	}
	c.refs++
	s.mu.Unlock()
	release = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c.refs--; c.refs == 0 {
			delete(s.calls, key)
		}
	}
	if ok {
		<-c.done
		return c.batch, release, c.err
	}
	defer close(c.done)
	c.batch, c.err = enrich()
	return c.batch, release, c.err
}

// holders returns how many collections hold reply's entry (for tests).
func (s *sharer) holders(reply *agentsvc.RawMetrics) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.calls[weak.Make(reply)]; ok {
		return c.refs
	}
	return 0
}
