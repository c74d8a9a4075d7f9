package agentsvc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// TopologyStream asks one agent for its view of the cluster. It is safe for
// concurrent use; concurrent requests share one command.
type TopologyStream struct {
	ordered[fodcv1.StreamClusterTopologyResponse, fodcv1.StreamClusterTopologyRequest]
}

// Request asks for the agent's topology and waits until ctx ends.
func (t *TopologyStream) Request(ctx context.Context) (*fodcv1.StreamClusterTopologyRequest, error) {
	return t.do(ctx, "topology", &fodcv1.StreamClusterTopologyResponse{RequestTopology: true})
}

// NodeConfigStream asks one of our agents for its node's configuration. It
// is safe for concurrent use; concurrent requests share one command.
type NodeConfigStream struct {
	ordered[fodcv1.ExtNodeConfigResponse, fodcv1.ExtNodeConfigRequest]
}

// Request asks for the node's configuration and waits until ctx ends.
func (c *NodeConfigStream) Request(ctx context.Context) (*fodcv1.ExtNodeConfigRequest, error) {
	return c.do(ctx, "config", &fodcv1.ExtNodeConfigResponse{RequestConfig: true})
}

// RegistryRound is one complete schema registry read: every chunk the
// agent sent before its done marker.
type RegistryRound struct {
	Chunks []*fodcv1.StreamSchemaRegistryRequest
}

// SchemaRegistryStream reads the schema registry through a liaison agent.
// It is safe for concurrent use; concurrent reads share one command.
type SchemaRegistryStream struct {
	ordered[fodcv1.StreamSchemaRegistryResponse, RegistryRound]
}

// Read asks for the registry content and waits for the whole round.
func (r *SchemaRegistryStream) Read(ctx context.Context) (*RegistryRound, error) {
	return r.do(ctx, "registry", &fodcv1.StreamSchemaRegistryResponse{RequestRegistry: true})
}

// LifecycleStream asks one agent for its lifecycle report. An agent answers
// a lifecycle command once, or never when its local collection fails
// (PROTOCOL.md §3.4), so replies cannot be matched by position. Since a
// report is the agent's current state, any reply that arrives while a
// caller waits is a valid answer for it: a reply goes to every caller
// waiting at that moment and is kept as the latest report. While a command
// is outstanding no other is sent. It is safe for concurrent use.
type LifecycleStream struct {
	ss *session[fodcv1.StreamLifecycleResponse]

	mu      sync.Mutex // guards the fields below
	sentAt  time.Time  // outstanding command, zero when none
	arrived chan struct{}
	last    *fodcv1.StreamLifecycleRequest
	lastAt  time.Time
	waiting int // callers blocked in Request
}

func newLifecycleStream(ss *session[fodcv1.StreamLifecycleResponse]) *LifecycleStream {
	return &LifecycleStream{ss: ss, arrived: make(chan struct{})}
}

// AgentID returns the id of the agent on the other end.
func (l *LifecycleStream) AgentID() string { return l.ss.agentID }

// Request waits for the agent's next report. It sends a command unless one
// is outstanding and younger than resendAfter.
func (l *LifecycleStream) Request(ctx context.Context, resendAfter time.Duration) (*fodcv1.StreamLifecycleRequest, error) {
	l.mu.Lock()
	now := time.Now()
	if l.sentAt.IsZero() || now.Sub(l.sentAt) > resendAfter {
		if err := l.ss.enqueue(&fodcv1.StreamLifecycleResponse{RequestLifecycle: true}); err != nil {
			l.mu.Unlock()
			if errors.Is(err, errSlow) {
				l.ss.closeWith(errSlow)
			}
			return nil, fmt.Errorf("agent %s: %w", l.ss.agentID, err)
		}
		l.sentAt = now
	}
	arrived := l.arrived
	l.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
	}()
	select {
	case <-arrived:
		l.mu.Lock()
		r := l.last
		l.mu.Unlock()
		return r, nil
	case <-l.ss.closed:
		return nil, fmt.Errorf("lifecycle stream of agent %s closed: %w", l.ss.agentID, closeCause(l.ss.cause()))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Pending reports since when a command has been waiting for an answer.
// A command outstanding for longer than the caller's budget means the
// agent's last collection failed.
func (l *LifecycleStream) Pending() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sentAt, !l.sentAt.IsZero()
}

// Last returns the latest report and when it arrived.
func (l *LifecycleStream) Last() (*fodcv1.StreamLifecycleRequest, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.lastAt, l.last != nil
}

// deliver stores a report and wakes the waiting callers. It reports
// whether a command was outstanding.
func (l *LifecycleStream) deliver(m *fodcv1.StreamLifecycleRequest) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	solicited := !l.sentAt.IsZero()
	l.last, l.lastAt = m, time.Now()
	l.sentAt = time.Time{}
	close(l.arrived)
	l.arrived = make(chan struct{})
	return solicited
}

// CrashStream asks one agent to send its crash records. Records arrive with
// no end marker and go to Options.OnCrashRecord.
type CrashStream struct {
	ss *session[fodcv1.StreamCrashDiagnosticsResponse]
}

// AgentID returns the id of the agent on the other end.
func (c *CrashStream) AgentID() string { return c.ss.agentID }

// Request asks the agent to send every crash record it holds.
func (c *CrashStream) Request() error {
	err := c.ss.enqueue(&fodcv1.StreamCrashDiagnosticsResponse{RequestDiagnostics: true})
	if errors.Is(err, errSlow) {
		c.ss.closeWith(errSlow)
	}
	return err
}

// maxListRecords bounds the records gathered for one list round.
const maxListRecords = 10000

// ErrProfileUnavailable wraps the error text an agent sent instead of a
// profile's content.
var ErrProfileUnavailable = errors.New("profile not available")

// PressureStream lists one agent's pressure profiles and downloads them.
//
// A list round is identified by the request id echoed in its list_complete
// message; the records sent before it belong to it. Rounds never mix: a
// round's records are delivered only to its own caller (W9). A download's
// chunks carry their request id and go to their own caller; the chunks of
// an abandoned download are drained and dropped. It is safe for concurrent
// use.
type PressureStream struct {
	ss *session[fodcv1.StreamPressureProfilesResponse]

	mu        sync.Mutex // guards the fields below
	records   []*fodcv1.PressureProfileRecord
	lists     map[string]chan []*fodcv1.PressureProfileRecord
	downloads map[string]*download
	closed    error
}

type download struct {
	chunks chan *fodcv1.PressureProfileChunk
	gone   chan struct{} // closed when the caller stops reading
}

func newPressureStream(ss *session[fodcv1.StreamPressureProfilesResponse]) *PressureStream {
	return &PressureStream{
		ss:        ss,
		lists:     make(map[string]chan []*fodcv1.PressureProfileRecord),
		downloads: make(map[string]*download),
	}
}

// AgentID returns the id of the agent on the other end.
func (p *PressureStream) AgentID() string { return p.ss.agentID }

func (p *PressureStream) send(m *fodcv1.StreamPressureProfilesResponse) error {
	err := p.ss.enqueue(m)
	if errors.Is(err, errSlow) {
		p.ss.closeWith(errSlow)
	}
	return err
}

// List runs one list round and returns its records.
func (p *PressureStream) List(ctx context.Context) ([]*fodcv1.PressureProfileRecord, error) {
	id := uuid.NewString()
	done := make(chan []*fodcv1.PressureProfileRecord, 1)
	p.mu.Lock()
	if p.closed != nil {
		p.mu.Unlock()
		return nil, p.closed
	}
	p.lists[id] = done
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.lists, id)
		p.mu.Unlock()
	}()
	if err := p.send(&fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_ListProfiles{
		ListProfiles: &fodcv1.ListProfiles{RequestId: id}}}); err != nil {
		return nil, fmt.Errorf("agent %s: %w", p.ss.agentID, err)
	}
	select {
	case recs := <-done:
		return recs, nil
	case <-p.ss.closed:
		return nil, fmt.Errorf("pressure stream of agent %s closed: %w", p.ss.agentID, closeCause(p.ss.cause()))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Fetch downloads one profile file and hands every non-empty chunk to
// write, in order, until the agent marks the last chunk. If write fails or
// ctx ends, the rest of the download is drained and dropped.
func (p *PressureStream) Fetch(ctx context.Context, profileID, typ, path string, write func([]byte) error) error {
	id := uuid.NewString()
	d := &download{chunks: make(chan *fodcv1.PressureProfileChunk, 4), gone: make(chan struct{})}
	p.mu.Lock()
	if p.closed != nil {
		p.mu.Unlock()
		return p.closed
	}
	p.downloads[id] = d
	p.mu.Unlock()
	defer close(d.gone)
	if err := p.send(&fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_FetchProfile{
		FetchProfile: &fodcv1.FetchPressureProfile{RequestId: id, ProfileId: profileID, Type: typ, Filepath: path}}}); err != nil {
		p.mu.Lock()
		delete(p.downloads, id)
		p.mu.Unlock()
		return fmt.Errorf("agent %s: %w", p.ss.agentID, err)
	}
	for {
		select {
		case c := <-d.chunks:
			if c.GetError() != "" {
				return fmt.Errorf("%w: %s", ErrProfileUnavailable, c.GetError())
			}
			if len(c.GetData()) > 0 {
				if err := write(c.GetData()); err != nil {
					return err
				}
			}
			if c.GetLast() {
				return nil
			}
		case <-p.ss.closed:
			return fmt.Errorf("pressure stream of agent %s closed during download: %w", p.ss.agentID, closeCause(p.ss.cause()))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// receive routes one message from the agent; it reports whether anyone
// asked for it.
func (p *PressureStream) receive(m *fodcv1.StreamPressureProfilesRequest) bool {
	switch pl := m.GetPayload().(type) {
	case *fodcv1.StreamPressureProfilesRequest_Record:
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.lists) == 0 || len(p.records) >= maxListRecords {
			return false // nobody lists, or a misbehaving agent: drop
		}
		p.records = append(p.records, pl.Record)
		return true
	case *fodcv1.StreamPressureProfilesRequest_ListComplete:
		p.mu.Lock()
		recs := p.records
		p.records = nil
		done, ok := p.lists[pl.ListComplete.GetRequestId()]
		p.mu.Unlock()
		if ok {
			done <- recs // buffered, and each id completes once
		}
		return ok
	case *fodcv1.StreamPressureProfilesRequest_Chunk:
		id := pl.Chunk.GetRequestId()
		p.mu.Lock()
		d, ok := p.downloads[id]
		if ok && pl.Chunk.GetLast() {
			delete(p.downloads, id)
		}
		p.mu.Unlock()
		if !ok {
			return false
		}
		// Back-pressure: a slow HTTP client slows this stream (and only
		// this stream) down; a client that left stops reading at once.
		select {
		case d.chunks <- pl.Chunk:
		case <-d.gone:
		case <-p.ss.closed:
		}
		return true
	}
	return false
}

// close fails every list round and download in progress.
func (p *PressureStream) close(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = fmt.Errorf("pressure stream of agent %s closed: %w", p.ss.agentID, closeCause(cause))
}
