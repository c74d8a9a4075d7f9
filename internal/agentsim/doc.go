// Package agentsim is a simulated upstream FODC agent: a real gRPC client that
// dials a proxy and behaves on the wire like the Apache BanyanDB fodc agent
// (PROTOCOL.md §2.2–§2.7 and §3). The proxy's tests, the end-to-end tests,
// the demo and the load tool use it in place of the real agent binary.
//
// One Agent runs one connection at a time: an agentconn session set up with
// the upstream agent's habits. On Run it creates a ClientConn, registers (one
// RegisterAgentRequest, then a wait without timeout for the first
// RegisterAgentResponse), adopts the proxy's heartbeat interval and opens the
// other streams in the upstream order (protocol.Release.Streams) with the
// gRPC metadata agent_id. Every stream has two goroutines: a receiver that
// reads a command and waits until it is answered before reading the next,
// and a sender, the only goroutine that calls Send or CloseSend on that
// stream, which answers the commands strictly in order. Heartbeats are the
// same RegisterAgentRequest, re-sent on the registration stream every
// interval.
//
// Any Recv error on any stream, including io.EOF and a stream the proxy ends
// with Unimplemented, makes the agent half-close every stream, drop the
// connection and register again under a new agent id, exactly like the
// upstream agent. The first reconnect attempt is immediate; failed attempts
// are retried every Config.ReconnectInterval.
//
// Replies come from the callbacks in Config. Synthetic builds a metrics
// generator with BanyanDB-like series, and FromRecording builds a Config that
// replays a session recorded from a real upstream agent.
package agentsim
