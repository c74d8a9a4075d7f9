// Package fakenode is a fake BanyanDB node for tests of the agent's node
// side: a real gRPC server on a loopback port that answers every method
// with the frames and status recorded from a real node
// (testdata/banyand-node), byte for byte.
//
// A call is answered with the first recorded call of the same method whose
// request bytes are equal (per-group List calls differ only there), else
// with the first recorded call of that method; a method that was never
// recorded is Unimplemented. Fail overrides a method's answer.
package fakenode

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/fodc-go/fodc/internal/fixture"
)

// Node is a running fake node.
type Node struct {
	lis net.Listener
	srv *grpc.Server

	mu    sync.Mutex
	calls map[string][]*fixture.Call
	fail  map[string]error
	count map[string]int
}

// Start serves the recordings named (LoadNode names) on 127.0.0.1:0 until
// the test ends.
func Start(t testing.TB, recordings ...string) *Node {
	t.Helper()
	n := &Node{calls: map[string][]*fixture.Call{}, fail: map[string]error{}, count: map[string]int{}}
	for _, name := range recordings {
		rec, err := fixture.LoadNode(name)
		if err != nil {
			t.Fatal(err)
		}
		calls, err := rec.Calls()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range calls {
			n.calls[c.Method] = append(n.calls[c.Method], c)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.lis = lis
	n.srv = grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(n.handle))
	done := make(chan struct{})
	go func() { defer close(done); _ = n.srv.Serve(lis) }()
	t.Cleanup(func() { n.srv.Stop(); <-done })
	return n
}

// Addr is the node's address, 127.0.0.1:<port>.
func (n *Node) Addr() string { return n.lis.Addr().String() }

// Port is the node's port.
func (n *Node) Port() int { return n.lis.Addr().(*net.TCPAddr).Port }

// Fail makes method (a full path) answer err from now on; nil restores the
// recording.
func (n *Node) Fail(method string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		delete(n.fail, method)
		return
	}
	n.fail[method] = err
}

// Count returns how often method was called.
func (n *Node) Count(method string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.count[method]
}

func (n *Node) handle(_ any, st grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(st)
	if !ok {
		return status.Error(codes.Internal, "no method")
	}
	var req []byte
	if err := st.RecvMsg(&req); err != nil {
		return err
	}
	n.mu.Lock()
	n.count[method]++
	failErr := n.fail[method]
	var pick *fixture.Call
	for _, c := range n.calls[method] {
		if len(c.Requests) > 0 && bytes.Equal(c.Requests[0], req) {
			pick = c
			break
		}
	}
	if pick == nil && len(n.calls[method]) > 0 {
		pick = n.calls[method][0]
	}
	n.mu.Unlock()
	if failErr != nil {
		return failErr
	}
	if pick == nil {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	for _, b := range pick.Responses {
		if err := st.SendMsg(b); err != nil {
			return err
		}
	}
	code, ok := codeOf(pick.Code)
	if !ok {
		return status.Errorf(codes.Internal, "recorded code %q unknown", pick.Code)
	}
	if code == codes.OK {
		return nil
	}
	return status.Error(code, pick.Message)
}

// codeOf parses a recorded code name such as Unimplemented; "" is OK.
func codeOf(s string) (codes.Code, bool) {
	if s == "" {
		return codes.OK, true
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == s {
			return c, true
		}
	}
	return codes.Unknown, false
}

// rawCodec passes message bytes through unchanged.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, errors.New("fakenode: message is not []byte")
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return errors.New("fakenode: target is not *[]byte")
	}
	*p = data.Materialize()
	return nil
}
