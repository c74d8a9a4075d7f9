package agentsvc

import (
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// RegistrationLimits bound what one registration or heartbeat message may
// carry; the proxy stamps these values on every series of the agent, so an
// unbounded one multiplies into every answer. A zero field means no limit.
type RegistrationLimits struct {
	// MaxLabels bounds the node labels.
	MaxLabels int
	// MaxContainers bounds the container names.
	MaxContainers int
	// MaxNameLen bounds the pod name, each container name, the role, each
	// label name and each secondary address name, in bytes.
	MaxNameLen int
	// MaxValueLen bounds each label value and each address, in bytes.
	MaxValueLen int
	// PerPeerRate and PerPeerBurst bound the registrations one peer address
	// (IP) may make: a steady rate per second and a burst (0: no limit).
	PerPeerRate  float64
	PerPeerBurst int
}

// Reasons a registration or heartbeat is refused, as
// fodc_proxy_registrations_rejected_total labels them.
const (
	reasonLabels      = "labels"
	reasonContainers  = "containers"
	reasonNameLength  = "name_length"
	reasonValueLength = "value_length"
	reasonRate        = "rate"
)

// limitError is a registration over one of the RegistrationLimits.
type limitError struct {
	reason string
	msg    string
}

func (e *limitError) Error() string { return e.msg }

func overLimit(limit, got int) bool { return limit > 0 && got > limit }

// check holds a registration or heartbeat message to l.
func (l RegistrationLimits) check(req *fodcv1.RegisterAgentRequest) *limitError {
	name := func(what, v string) *limitError {
		if overLimit(l.MaxNameLen, len(v)) {
			return &limitError{reasonNameLength, fmt.Sprintf("%s is %d bytes long, more than the %d allowed", what, len(v), l.MaxNameLen)}
		}
		return nil
	}
	value := func(what, v string) *limitError {
		if overLimit(l.MaxValueLen, len(v)) {
			return &limitError{reasonValueLength, fmt.Sprintf("%s is %d bytes long, more than the %d allowed", what, len(v), l.MaxValueLen)}
		}
		return nil
	}
	if overLimit(l.MaxLabels, len(req.GetLabels())) {
		return &limitError{reasonLabels, fmt.Sprintf("%d node labels, more than the %d allowed", len(req.GetLabels()), l.MaxLabels)}
	}
	if overLimit(l.MaxContainers, len(req.GetContainerNames())) {
		return &limitError{reasonContainers, fmt.Sprintf("%d container names, more than the %d allowed", len(req.GetContainerNames()), l.MaxContainers)}
	}
	if err := name("pod_name", req.GetPodName()); err != nil {
		return err
	}
	if err := name("node_role", req.GetNodeRole()); err != nil {
		return err
	}
	for _, c := range req.GetContainerNames() {
		if err := name("a container name", c); err != nil {
			return err
		}
	}
	for k, v := range req.GetLabels() {
		if err := name("a label name", k); err != nil {
			return err
		}
		if err := value("the value of label "+truncate(k), v); err != nil {
			return err
		}
	}
	if a := req.GetPrimaryAddress(); a != nil {
		if err := value("primary_address.ip", a.GetIp()); err != nil {
			return err
		}
	}
	if overLimit(l.MaxLabels, len(req.GetSecondaryAddresses())) {
		return &limitError{reasonLabels, fmt.Sprintf("%d secondary addresses, more than the %d allowed", len(req.GetSecondaryAddresses()), l.MaxLabels)}
	}
	for k, a := range req.GetSecondaryAddresses() {
		if err := name("a secondary address name", k); err != nil {
			return err
		}
		if err := value("secondary address "+truncate(k), a.GetIp()); err != nil {
			return err
		}
	}
	return nil
}

// truncate keeps error messages short whatever an agent sent.
func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// peerLimiter bounds the registrations per peer IP with a token bucket per
// peer. It remembers at most maxPeers peers; idle ones are forgotten first.
type peerLimiter struct {
	rate  rate.Limit
	burst int

	mu    sync.Mutex // guards peers
	peers map[string]*peerBucket
}

type peerBucket struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

// maxPeers bounds the peers remembered by the registration rate limit.
const maxPeers = 16384

func newPeerLimiter(perSecond float64, burst int) *peerLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &peerLimiter{rate: rate.Limit(perSecond), burst: max(burst, 1), peers: make(map[string]*peerBucket)}
}

// allow takes a token for the peer at addr ("ip:port" or just an IP).
func (p *peerLimiter) allow(addr string, now time.Time) bool {
	if p == nil {
		return true
	}
	ip := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		ip = h
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.peers[ip]
	if !ok {
		if len(p.peers) >= maxPeers {
			p.forgetIdleLocked(now)
		}
		b = &peerBucket{lim: rate.NewLimiter(p.rate, p.burst)}
		p.peers[ip] = b
	}
	b.lastSeen = now
	return b.lim.AllowN(now, 1)
}

// forgetIdleLocked drops the peers whose bucket has refilled (they lose
// nothing by being forgotten), or, if none has, the least recently seen.
func (p *peerLimiter) forgetIdleLocked(now time.Time) {
	refill := time.Duration(float64(p.burst) / float64(p.rate) * float64(time.Second))
	var oldest string
	var oldestAt time.Time
	for ip, b := range p.peers {
		if now.Sub(b.lastSeen) > refill {
			delete(p.peers, ip)
			continue
		}
		if oldest == "" || b.lastSeen.Before(oldestAt) {
			oldest, oldestAt = ip, b.lastSeen
		}
	}
	if len(p.peers) >= maxPeers && oldest != "" {
		delete(p.peers, oldest)
	}
}
