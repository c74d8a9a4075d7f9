// Package flight is the proxy's one request-level de-duplication
// mechanism: callers that ask for the same key while a call for it runs
// share that call and its result, and a finished result may be kept for a
// while and reused. Every endpoint that fans out to agents uses it (metrics
// answers, topology, lifecycle and configuration collections, crash-record
// windows, pressure-profile list rounds); below it, identical commands to
// one agent are joined by the stream's command queue (streams.Queue).
//
// A call runs in a goroutine of the group, never on a caller's context: a
// caller that gives up returns at once and the call goes on for the others.
// A call bounds its own duration. With Options.CancelAbandoned, the call's
// context is cancelled when the last waiting caller has left.
package flight

import (
	"context"
	"sync"
	"time"
)

// Options configures a Group. The zero value shares calls in flight only.
type Options[K comparable, V any] struct {
	// Fresh keeps a successful result for this long after its call ended;
	// callers in that time get it without a new call (0: nothing kept).
	Fresh time.Duration
	// Valid, when set, is asked before a kept result is reused; a result it
	// rejects is dropped and a new call runs.
	Valid func(key K, v V) bool
	// CancelAbandoned cancels a call's context when every caller that
	// waited for it has left before it ended.
	CancelAbandoned bool
	// Now is the clock of Fresh (time.Now when nil).
	Now func() time.Time
}

// Group shares calls by key. It is safe for concurrent use; construct it
// with New.
type Group[K comparable, V any] struct {
	opts Options[K, V]
	now  func() time.Time

	mu    sync.Mutex // guards calls, kept and every call's waiters
	calls map[K]*call[V]
	kept  map[K]keptResult[V]
}

type call[V any] struct {
	done     chan struct{} // closed when fn has returned
	val      V             // written before done is closed
	err      error         // likewise
	waiters  int
	sharedBy int // waiters when fn returned; written before done is closed
	cancel   context.CancelFunc
}

type keptResult[V any] struct {
	val V
	at  time.Time
}

// New returns an empty Group.
func New[K comparable, V any](opts Options[K, V]) *Group[K, V] {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Group[K, V]{opts: opts, now: now, calls: make(map[K]*call[V]), kept: make(map[K]keptResult[V])}
}

// Ticket is one caller's interest in a call. Exactly one of Wait or Leave
// must be called on it.
type Ticket[K comparable, V any] struct {
	g    *Group[K, V]
	key  K
	c    *call[V] // nil when the result was kept
	val  V        // the kept result
	once sync.Once
}

// Join returns a ticket for key's result: a kept fresh result, the call in
// flight, or a new call of fn, started now in a goroutine of its own. Join
// never blocks on fn, so a caller can join many keys before waiting for
// any of them.
func (g *Group[K, V]) Join(key K, fn func(ctx context.Context) (V, error)) *Ticket[K, V] {
	g.mu.Lock()
	defer g.mu.Unlock()
	if k, ok := g.kept[key]; ok {
		if g.now().Sub(k.at) < g.opts.Fresh && (g.opts.Valid == nil || g.opts.Valid(key, k.val)) {
			return &Ticket[K, V]{g: g, key: key, val: k.val}
		}
		delete(g.kept, key)
	}
	c, ok := g.calls[key]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		c = &call[V]{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = c
		go g.run(ctx, key, c, fn)
	}
	c.waiters++
	return &Ticket[K, V]{g: g, key: key, c: c}
}

func (g *Group[K, V]) run(ctx context.Context, key K, c *call[V], fn func(context.Context) (V, error)) {
	defer c.cancel()
	c.val, c.err = fn(ctx)
	g.mu.Lock()
	if g.calls[key] == c {
		delete(g.calls, key)
	}
	if c.err == nil && g.opts.Fresh > 0 {
		g.kept[key] = keptResult[V]{val: c.val, at: g.now()}
	}
	c.sharedBy = c.waiters
	g.mu.Unlock()
	close(c.done)
}

// Do joins key's call and waits for its result until ctx ends.
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func(ctx context.Context) (V, error)) (V, error) {
	return g.Join(key, fn).Wait(ctx)
}

// Wait returns the call's result, or ctx.Err() when ctx ends first. Either
// way the ticket is left.
func (t *Ticket[K, V]) Wait(ctx context.Context) (V, error) {
	if t.c == nil {
		return t.val, nil
	}
	defer t.Leave()
	select {
	case <-t.c.done:
		return t.c.val, t.c.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// Sole reports, once Wait has returned the result, whether this caller is
// the only one it went to: no other caller waited for the call when it
// ended, and the result is not kept for later callers. A sole caller may
// consume the result (it can be built for one reader). Callers that gave
// up before the end do not count.
func (t *Ticket[K, V]) Sole() bool {
	if t.c == nil || t.g.opts.Fresh > 0 {
		return false
	}
	select {
	case <-t.c.done:
		return t.c.sharedBy == 1
	default:
		return false
	}
}

// Leave gives up the caller's interest without waiting. The last caller
// to leave a call that still runs cancels it when the group was built with
// CancelAbandoned; a later Join then starts a new call.
func (t *Ticket[K, V]) Leave() {
	if t.c == nil {
		return
	}
	t.once.Do(func() {
		g := t.g
		g.mu.Lock()
		t.c.waiters--
		abandoned := t.c.waiters == 0 && g.opts.CancelAbandoned
		if abandoned && g.calls[t.key] == t.c {
			delete(g.calls, t.key)
		}
		g.mu.Unlock()
		if abandoned {
			t.c.cancel()
		}
	})
}

// Forget drops key's kept result, so that the next Join starts a call.
func (g *Group[K, V]) Forget(key K) {
	g.mu.Lock()
	delete(g.kept, key)
	g.mu.Unlock()
}

// InFlight returns how many calls run.
func (g *Group[K, V]) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls)
}

// Waiting returns how many callers wait for key's call in flight (0 when
// none runs).
func (g *Group[K, V]) Waiting(key K) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		return c.waiters
	}
	return 0
}
