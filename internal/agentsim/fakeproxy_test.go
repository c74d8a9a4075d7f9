package agentsim

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
)

// waitTimeout bounds every event-based wait in the tests. It is generous on
// purpose: it only matters when a test is about to fail.
const waitTimeout = 15 * time.Second

// openEvent is a stream as it arrived on the wire, seen by the transport
// reader in arrival order (tap handle), before any handler runs.
type openEvent struct {
	method  string
	agentID []string
}

// regSession is one RegisterAgent stream seen by the fake proxy.
type regSession struct {
	req        *fodcv1.RegisterAgentRequest
	agentID    string
	heartbeats chan *fodcv1.RegisterAgentRequest
}

// peerStream is one non-registration stream seen by the fake proxy. Tests
// push commands into out and read the agent's messages from in.
type peerStream struct {
	method  string
	agentID string
	in      chan proto.Message
	out     chan proto.Message
	ended   chan struct{} // closed when the handler returned
	endErr  error         // the Recv error that ended it; read after ended
}

// fakeProxy is a tiny FODCService that records what it receives. It answers
// registrations like the upstream proxy and never ends a stream on its own,
// except when reject says so.
type fakeProxy struct {
	fodcv1.UnimplementedFODCServiceServer

	addr      string
	hbSeconds int64
	// regReply, when set, replaces the success reply of the n-th
	// registration (1-based).
	regReply func(n int, id string) *fodcv1.RegisterAgentResponse
	// reject, when set, may end a stream at once with an error.
	reject func(method, agentID string) error

	opens   chan openEvent
	regs    chan *regSession
	streams chan *peerStream

	stash []*peerStream // streams read by streamsOf for another agent id

	mu sync.Mutex // guards n
	n  int
}

// startProxy serves p on a loopback TCP port until the test ends.
func startProxy(t *testing.T, p *fakeProxy) *fakeProxy {
	t.Helper()
	p.opens = make(chan openEvent, 1024)
	p.regs = make(chan *regSession, 64)
	p.streams = make(chan *peerStream, 256)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.addr = lis.Addr().String()
	srv := grpc.NewServer(grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
		select {
		case p.opens <- openEvent{method: info.FullMethodName, agentID: info.Header.Get("agent_id")}:
		default:
		}
		return ctx, nil
	}))
	fodcv1.RegisterFODCServiceServer(srv, p)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return p
}

func (p *fakeProxy) RegisterAgent(st grpc.BidiStreamingServer[fodcv1.RegisterAgentRequest, fodcv1.RegisterAgentResponse]) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	id := fmt.Sprintf("agent-%d", n)
	resp := &fodcv1.RegisterAgentResponse{
		Success: true, Message: "Agent registered successfully",
		HeartbeatIntervalSeconds: p.hbSeconds, AgentId: id,
	}
	if p.regReply != nil {
		if r := p.regReply(n, id); r != nil {
			resp = r
		}
	}
	rs := &regSession{req: req, agentID: resp.GetAgentId(), heartbeats: make(chan *fodcv1.RegisterAgentRequest, 256)}
	select {
	case p.regs <- rs:
	case <-st.Context().Done():
		return st.Context().Err()
	}
	if err := st.Send(resp); err != nil {
		return err
	}
	if !resp.GetSuccess() {
		return status.Error(codes.Unknown, resp.GetMessage())
	}
	for {
		hb, err := st.Recv()
		if err != nil {
			return nil
		}
		select {
		case rs.heartbeats <- hb:
		default:
		}
	}
}

func (p *fakeProxy) StreamMetrics(st grpc.BidiStreamingServer[fodcv1.StreamMetricsRequest, fodcv1.StreamMetricsResponse]) error {
	return handle(p, fixture.MethodStreamMetrics, st)
}

func (p *fakeProxy) StreamClusterTopology(st grpc.BidiStreamingServer[fodcv1.StreamClusterTopologyRequest, fodcv1.StreamClusterTopologyResponse]) error {
	return handle(p, fixture.MethodStreamClusterTopology, st)
}

func (p *fakeProxy) StreamLifecycle(st grpc.BidiStreamingServer[fodcv1.StreamLifecycleRequest, fodcv1.StreamLifecycleResponse]) error {
	return handle(p, fixture.MethodStreamLifecycle, st)
}

func (p *fakeProxy) StreamCrashDiagnostics(st grpc.BidiStreamingServer[fodcv1.StreamCrashDiagnosticsRequest, fodcv1.StreamCrashDiagnosticsResponse]) error {
	return handle(p, fixture.MethodStreamCrashDiagnostics, st)
}

func (p *fakeProxy) StreamPressureProfiles(st grpc.BidiStreamingServer[fodcv1.StreamPressureProfilesRequest, fodcv1.StreamPressureProfilesResponse]) error {
	return handle(p, fixture.MethodStreamPressureProfiles, st)
}

func (p *fakeProxy) StreamSchemaRegistry(st grpc.BidiStreamingServer[fodcv1.StreamSchemaRegistryRequest, fodcv1.StreamSchemaRegistryResponse]) error {
	return handle(p, fixture.MethodStreamSchemaRegistry, st)
}

// handle serves one command stream: a goroutine sends what the test pushes
// into out; the handler itself receives until the agent half-closes or the
// stream breaks, and then ends the stream with OK.
func handle[Req, Resp any](p *fakeProxy, method string, st grpc.BidiStreamingServer[Req, Resp]) error {
	ctx := st.Context()
	var id string
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("agent_id")) > 0 {
		id = md.Get("agent_id")[0]
	}
	if p.reject != nil {
		if err := p.reject(method, id); err != nil {
			return err
		}
	}
	ps := &peerStream{
		method: method, agentID: id,
		in: make(chan proto.Message, 64), out: make(chan proto.Message, 64),
		ended: make(chan struct{}),
	}
	select {
	case p.streams <- ps:
	case <-ctx.Done():
		return ctx.Err()
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-quit:
				return
			case m := <-ps.out:
				if err := st.Send(any(m).(*Resp)); err != nil {
					return
				}
			}
		}
	})
	defer func() {
		close(quit)
		wg.Wait()
		close(ps.ended)
	}()
	for {
		m, err := st.Recv()
		if err != nil {
			ps.endErr = err
			return nil
		}
		select {
		case ps.in <- any(m).(proto.Message):
		case <-ctx.Done():
			ps.endErr = ctx.Err()
			return nil
		}
	}
}

// next returns the next value from ch or fails the test after waitTimeout.
func next[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		var zero T
		t.Fatalf("timed out waiting for %T", zero)
		return zero
	}
}

// nextMsg returns the next message the agent sent on ps, as a T.
func nextMsg[T proto.Message](t *testing.T, ps *peerStream) T {
	t.Helper()
	m := next(t, ps.in)
	v, ok := m.(T)
	require.Truef(t, ok, "got %T", m)
	return v
}

// waitClosed waits until ch is closed or fails the test.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
	}
}

// streamsOf collects the next n streams the proxy accepted for agentID, by
// method. Streams of other agent ids are kept for later calls. Only the test
// goroutine may call it.
func (p *fakeProxy) streamsOf(t *testing.T, agentID string, n int) map[string]*peerStream {
	t.Helper()
	out := map[string]*peerStream{}
	kept := p.stash[:0]
	for _, ps := range p.stash {
		if ps.agentID == agentID && len(out) < n {
			out[ps.method] = ps
			continue
		}
		kept = append(kept, ps)
	}
	p.stash = kept
	for len(out) < n {
		ps := next(t, p.streams)
		if ps.agentID == agentID {
			out[ps.method] = ps
			continue
		}
		p.stash = append(p.stash, ps)
	}
	return out
}

// runAgent starts a.Run in a goroutine. wait cancels nothing: it returns
// Run's result once Run has returned, and fails the test if that takes
// longer than waitTimeout. The test's cleanup cancels the agent and waits.
func runAgent(t *testing.T, a *Agent) (cancel context.CancelFunc, wait func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- a.Run(ctx) }()
	wait = sync.OnceValue(func() error {
		timer := time.NewTimer(waitTimeout)
		defer timer.Stop()
		select {
		case err := <-ch:
			return err
		case <-timer.C:
			t.Error("Run did not return")
			return nil
		}
	})
	t.Cleanup(func() {
		cancel()
		_ = wait()
	})
	return cancel, wait
}

// waitRegistered waits for the n-th registration and returns its id.
func waitRegistered(t *testing.T, a *Agent, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	id, err := a.WaitRegistered(ctx, n)
	require.NoError(t, err)
	return id
}

// baseConfig is a HEAD data-node agent pointed at p.
func baseConfig(p *fakeProxy) Config {
	return Config{
		ProxyAddr: p.addr,
		Register:  &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "banyand-data-0"},
	}
}
