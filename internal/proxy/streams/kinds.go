package streams

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Topology asks one agent for its view of the cluster. It is safe for
// concurrent use; concurrent requests share one command.
type Topology struct {
	ordered[fodcv1.StreamClusterTopologyResponse, fodcv1.StreamClusterTopologyRequest]
}

// Request asks for the agent's topology and waits until ctx ends.
func (t *Topology) Request(ctx context.Context) (*fodcv1.StreamClusterTopologyRequest, error) {
	return t.do(ctx, "topology", &fodcv1.StreamClusterTopologyResponse{RequestTopology: true})
}

// NodeConfig asks one of our agents for its node's configuration (an
// extension of this project). It is safe for concurrent use; concurrent
// requests share one command.
type NodeConfig struct {
	ordered[fodcv1.ExtNodeConfigResponse, fodcv1.ExtNodeConfigRequest]
}

// Request asks for the node's configuration and waits until ctx ends.
func (c *NodeConfig) Request(ctx context.Context) (*fodcv1.ExtNodeConfigRequest, error) {
	return c.do(ctx, "config", &fodcv1.ExtNodeConfigResponse{RequestConfig: true})
}

// RegistryRound is one complete schema registry read: every chunk the
// agent sent before its done marker.
type RegistryRound struct {
	Chunks []*fodcv1.StreamSchemaRegistryRequest
}

// SchemaRegistry reads the schema registry through a liaison agent. Every
// command is answered by chunks and a done marker, assembled by Receive
// into one RegistryRound. The chunks of an abandoned round are drained
// through its done marker and discarded, never handed to the next read
// (W11). It is safe for concurrent use; concurrent reads share one command.
type SchemaRegistry struct {
	ordered[fodcv1.StreamSchemaRegistryResponse, RegistryRound]
	partial []*fodcv1.StreamSchemaRegistryRequest // read by the receiver only
}

// Read asks for the registry content and waits for the whole round.
func (r *SchemaRegistry) Read(ctx context.Context) (*RegistryRound, error) {
	return r.do(ctx, "registry", &fodcv1.StreamSchemaRegistryResponse{RequestRegistry: true})
}

// Receive takes one message of a round; only the stream's receiver calls
// it.
func (r *SchemaRegistry) Receive(m *fodcv1.StreamSchemaRegistryRequest) Outcome {
	if m.GetGroup() != nil {
		r.partial = append(r.partial, m)
	}
	if !m.GetDone() {
		return Partial
	}
	round := &RegistryRound{Chunks: r.partial}
	r.partial = nil
	return r.Deliver(round)
}

// Lifecycle asks one agent for its lifecycle report. An agent answers
// a lifecycle command once, or never when its local collection fails
// (PROTOCOL.md §3.4), so replies cannot be matched by position. Since a
// report is the agent's current state, any reply that arrives while a
// caller waits is a valid answer for it: a reply goes to every caller
// waiting at that moment and is kept as the latest report. While a command
// is outstanding no other is sent. It is safe for concurrent use.
type Lifecycle struct {
	*session[fodcv1.StreamLifecycleResponse]

	mu      sync.Mutex // guards the fields below
	sentAt  time.Time  // outstanding command, zero when none
	arrived chan struct{}
	last    *fodcv1.StreamLifecycleRequest
	lastAt  time.Time
	waiting int // callers blocked in Request
}

func newLifecycle(ss *session[fodcv1.StreamLifecycleResponse]) *Lifecycle {
	return &Lifecycle{session: ss, arrived: make(chan struct{})}
}

// Close ends the stream with cause; waiting callers fail.
func (l *Lifecycle) Close(cause error) { l.closeWith(cause) }

// Request waits for the agent's next report. It sends a command unless one
// is outstanding and younger than resendAfter.
func (l *Lifecycle) Request(ctx context.Context, resendAfter time.Duration) (*fodcv1.StreamLifecycleRequest, error) {
	l.mu.Lock()
	now := time.Now()
	if l.sentAt.IsZero() || now.Sub(l.sentAt) > resendAfter {
		if err := l.enqueue(&fodcv1.StreamLifecycleResponse{RequestLifecycle: true}); err != nil {
			l.mu.Unlock()
			return nil, fmt.Errorf("agent %s: %w", l.agentID, err)
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
	case <-l.closed:
		return nil, fmt.Errorf("lifecycle stream of agent %s closed: %w", l.agentID, l.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Pending reports since when a command has been waiting for an answer.
// A command outstanding for longer than the caller's budget means the
// agent's last collection failed.
func (l *Lifecycle) Pending() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sentAt, !l.sentAt.IsZero()
}

// Last returns the latest report and when it arrived.
func (l *Lifecycle) Last() (*fodcv1.StreamLifecycleRequest, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.lastAt, l.last != nil
}

// Receive stores a report and wakes the waiting callers: Delivered when a
// command was outstanding, else Unsolicited (the report is kept all the
// same). Only the stream's receiver calls it.
func (l *Lifecycle) Receive(m *fodcv1.StreamLifecycleRequest) Outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	solicited := !l.sentAt.IsZero()
	l.last, l.lastAt = m, time.Now()
	l.sentAt = time.Time{}
	close(l.arrived)
	l.arrived = make(chan struct{})
	if !solicited {
		return Unsolicited
	}
	return Delivered
}

// Crash asks one agent to send its crash records. Records arrive with no
// end marker; the gRPC service hands them to the crash-record cache.
type Crash struct {
	*session[fodcv1.StreamCrashDiagnosticsResponse]
}

// Close ends the stream with cause.
func (c *Crash) Close(cause error) { c.closeWith(cause) }

// Request asks the agent to send every crash record it holds.
func (c *Crash) Request() error {
	return c.enqueue(&fodcv1.StreamCrashDiagnosticsResponse{RequestDiagnostics: true})
}

// maxListRecords bounds the records gathered for one list round.
const maxListRecords = 10000

// ErrProfileUnavailable wraps the error text an agent sent instead of a
// profile's content.
var ErrProfileUnavailable = errors.New("profile not available")

// Pressure lists one agent's pressure profiles and downloads them.
//
// A list round is identified by the request id echoed in its list_complete
// message; the records sent before it belong to it. Rounds never mix: a
// round's records are delivered only to its own caller (W9). A download's
// chunks carry their request id and go to their own caller; the chunks of
// an abandoned download are drained and dropped. It is safe for concurrent
// use.
type Pressure struct {
	*session[fodcv1.StreamPressureProfilesResponse]

	mu        sync.Mutex // guards the fields below
	records   []*fodcv1.PressureProfileRecord
	lists     map[string]chan []*fodcv1.PressureProfileRecord
	downloads map[string]*download
	closedErr error
}

type download struct {
	chunks chan *fodcv1.PressureProfileChunk
	gone   chan struct{} // closed when the caller stops reading
}

func newPressure(ss *session[fodcv1.StreamPressureProfilesResponse]) *Pressure {
	return &Pressure{
		session:   ss,
		lists:     make(map[string]chan []*fodcv1.PressureProfileRecord),
		downloads: make(map[string]*download),
	}
}

func (p *Pressure) send(m *fodcv1.StreamPressureProfilesResponse) error {
	return p.enqueue(m)
}

// List runs one list round and returns its records.
func (p *Pressure) List(ctx context.Context) ([]*fodcv1.PressureProfileRecord, error) {
	id := uuid.NewString()
	done := make(chan []*fodcv1.PressureProfileRecord, 1)
	p.mu.Lock()
	if p.closedErr != nil {
		p.mu.Unlock()
		return nil, p.closedErr
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
		return nil, fmt.Errorf("agent %s: %w", p.agentID, err)
	}
	select {
	case recs := <-done:
		return recs, nil
	case <-p.closed:
		return nil, fmt.Errorf("pressure stream of agent %s closed: %w", p.agentID, p.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Fetch downloads one profile file and hands every non-empty chunk to
// write, in order, until the agent marks the last chunk. If write fails or
// ctx ends, the rest of the download is drained and dropped.
func (p *Pressure) Fetch(ctx context.Context, profileID, typ, path string, write func([]byte) error) error {
	id := uuid.NewString()
	d := &download{chunks: make(chan *fodcv1.PressureProfileChunk, 4), gone: make(chan struct{})}
	p.mu.Lock()
	if p.closedErr != nil {
		p.mu.Unlock()
		return p.closedErr
	}
	p.downloads[id] = d
	p.mu.Unlock()
	defer close(d.gone)
	if err := p.send(&fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_FetchProfile{
		FetchProfile: &fodcv1.FetchPressureProfile{RequestId: id, ProfileId: profileID, Type: typ, Filepath: path}}}); err != nil {
		p.mu.Lock()
		delete(p.downloads, id)
		p.mu.Unlock()
		return fmt.Errorf("agent %s: %w", p.agentID, err)
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
		case <-p.closed:
			return fmt.Errorf("pressure stream of agent %s closed during download: %w", p.agentID, p.err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Receive routes one message from the agent: Delivered when someone asked
// for it, else Unsolicited. Only the stream's receiver calls it.
func (p *Pressure) Receive(m *fodcv1.StreamPressureProfilesRequest) Outcome {
	if p.route(m) {
		return Delivered
	}
	return Unsolicited
}

func (p *Pressure) route(m *fodcv1.StreamPressureProfilesRequest) bool {
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
		case <-p.closed:
		}
		return true
	}
	return false
}

// Close ends the stream with cause and fails every list round and
// download in progress.
func (p *Pressure) Close(cause error) {
	if !p.closeWith(cause) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closedErr = fmt.Errorf("pressure stream of agent %s closed: %w", p.agentID, p.err)
}
