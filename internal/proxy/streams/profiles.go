package streams

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// ErrTooLarge means a profile grew beyond the caller's byte limit.
var ErrTooLarge = errors.New("profile larger than the byte limit")

// Profiles requests on-demand profiles from one of our agents (the
// ExtStreamProfiles extension). Each request carries its own id; the
// agent's answer is an acceptance (or a refusal), then chunks up to one
// marked last. Messages of a request nobody waits for any more are
// dropped. It is safe for concurrent use.
type Profiles struct {
	*session[fodcv1.ExtProfileCommand]

	mu      sync.Mutex // guards waiting
	waiting map[string]chan *fodcv1.ExtProfileRequest
}

func newProfiles(ss *session[fodcv1.ExtProfileCommand]) *Profiles {
	return &Profiles{session: ss, waiting: make(map[string]chan *fodcv1.ExtProfileRequest)}
}

// Close ends the stream with cause; waiting callers fail.
func (p *Profiles) Close(cause error) { p.closeWith(cause) }

// profileBuffer is how many messages of one request may wait for their
// reader; the receiver never blocks beyond it (the request then fails).
const profileBuffer = 64

// Fetch is one running profile request.
type Fetch struct {
	p   *Profiles
	id  string
	in  chan *fodcv1.ExtProfileRequest
	src string
}

// Start sends a profile command and waits for the agent's acceptance. A
// refusal is returned as an error with the agent's text. The caller must
// Close the returned Fetch.
func (p *Profiles) Start(ctx context.Context, typ string, seconds uint32) (*Fetch, error) {
	f := &Fetch{p: p, id: uuid.NewString(), in: make(chan *fodcv1.ExtProfileRequest, profileBuffer)}
	p.mu.Lock()
	p.waiting[f.id] = f.in
	p.mu.Unlock()
	if err := p.enqueue(&fodcv1.ExtProfileCommand{RequestId: f.id, Type: typ, Seconds: seconds}); err != nil {
		f.Close()
		return nil, fmt.Errorf("agent %s: %w", p.agentID, err)
	}
	m, err := f.next(ctx)
	if err != nil {
		f.Close()
		return nil, err
	}
	if m.GetError() != "" || !m.GetAccepted() {
		f.Close()
		msg := m.GetError()
		if msg == "" {
			msg = "profile not accepted"
		}
		return nil, errors.New(msg)
	}
	f.src = m.GetSource()
	return f, nil
}

// Source returns where the agent fetches the profile from.
func (f *Fetch) Source() string { return f.src }

func (f *Fetch) next(ctx context.Context) (*fodcv1.ExtProfileRequest, error) {
	select {
	case m, ok := <-f.in:
		if !ok {
			return nil, fmt.Errorf("agent %s: profile reply overflowed", f.p.agentID)
		}
		return m, nil
	case <-f.p.Done():
		return nil, fmt.Errorf("profiles stream of agent %s closed: %w", f.p.agentID, f.p.Err())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Read collects the profile's chunks until the last one, failing beyond
// maxBytes (0: no limit).
func (f *Fetch) Read(ctx context.Context, maxBytes int) ([]byte, error) {
	var data []byte
	for {
		m, err := f.next(ctx)
		if err != nil {
			return nil, err
		}
		data = append(data, m.GetData()...)
		if maxBytes > 0 && len(data) > maxBytes {
			return nil, ErrTooLarge
		}
		if m.GetError() != "" {
			return nil, errors.New(m.GetError())
		}
		if m.GetLast() {
			return data, nil
		}
	}
}

// Close stops waiting for the request's messages.
func (f *Fetch) Close() {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	if f.p.waiting[f.id] == f.in {
		delete(f.p.waiting, f.id)
	}
}

// Receive takes one message of the agent; only the stream's receiver
// calls it.
func (p *Profiles) Receive(m *fodcv1.ExtProfileRequest) Outcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, ok := p.waiting[m.GetRequestId()]
	if !ok {
		return Unsolicited
	}
	select {
	case ch <- m:
		return Delivered
	default:
		// The reader fell behind: the request fails rather than the
		// receiver blocking every later message of the stream.
		delete(p.waiting, m.GetRequestId())
		close(ch)
		return Abandoned
	}
}
