package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/topology"
	"github.com/fodc-go/fodc/internal/roles"
)

// Which endpoints take which parameters (README, "HTTP API").
var (
	filterEndpoints = []string{"/metrics", "/metrics-windows", "/cluster", "/cluster/config", "/diagnostics", "/pressure-profiles"}
	roleEndpoints   = append([]string{"/cluster/topology", "/cluster/config/consistency"}, filterEndpoints...)
	queryEndpoints  = append([]string{"/cluster/lifecycle"}, roleEndpoints...)
)

// Every endpoint rejects every bad value of every parameter it takes, and
// every repeated one, with a 400 in the JSON envelope that names the
// parameter, before it looks at anything else (the test API has no cluster,
// diagnostics or pressure collectors: those endpoints would say 503).
func TestEveryEndpointRejectsBadParameters(t *testing.T) {
	e := newEnv(t)
	now := e.now // the test clock: 2027-01-15
	type bad struct{ query, mention string }
	filterBad := []bad{
		{"role=boss", "role"},
		{"role=datanode-h%C3%B6t", "role"},
		{"role=liaison&role=meta", "role"},
		{"role=&role=", "role"},
		{"address=10.0.0.1:99999", "address"},
		{"address=10.0.0.1:0", "address"},
		{"address=:17912", "address"},
		{"address=a%20b", "address"},
		{"address=10.0.0.1&address=10.0.0.2", "address"},
		{"pod_name=data%200", "pod_name"},
		{"pod_name=data%0A0", "pod_name"},
		{"pod_name=%FF", "pod_name"},
		{"pod_name=" + strings.Repeat("p", 254), "pod_name"},
		{"pod_name=a&pod_name=b", "pod_name"},
		{"agent_id=x%20y", "agent_id"},
		{"agent_id=" + strings.Repeat("a", 129), "agent_id"},
		{"agent_id=a&agent_id=a", "agent_id"},
		{"role=liaison%zz", "query"},
		{"role=liaison;pod_name=x", "query"},
	}
	roleBad := []bad{{"role=boss", "role"}, {"role=datanode-", "role"}, {"role=a&role=b", "role"}, {"x=%", "query"}}
	windowBad := []bad{
		{"start_time=yesterday", "start_time"},
		{"end_time=2026-13-01T00:00:00Z", "end_time"},
		{"start_time=1999-12-31T23:59:59Z", "start_time"},
		{"start_time=0000-01-01T00:00:00Z", "start_time"},
		{"end_time=" + url.QueryEscape(now.Add(25*time.Hour).UTC().Format(time.RFC3339)), "end_time"},
		{"end_time=9999-12-31T23:59:59Z", "end_time"},
		{"start_time=2026-01-01T00:00:00Z&start_time=2026-01-02T00:00:00Z", "start_time"},
		{"start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z", "start_time"},
		{"start_time=1767225600", "start_time"},
	}
	cases := map[string][]bad{
		"/cluster/topology":           roleBad,
		"/cluster/config/consistency": roleBad,
		"/cluster/lifecycle":          {{"a=%zz", "query"}},
		"/metrics-windows":            append(filterBad, windowBad...),
	}
	for _, ep := range filterEndpoints {
		if ep != "/metrics-windows" {
			cases[ep] = filterBad
		}
	}
	require.ElementsMatch(t, queryEndpoints, keys(cases))
	for ep, bads := range cases {
		for _, tc := range bads {
			t.Run(ep+"?"+tc.query, func(t *testing.T) {
				code, hdr, body := e.get(t, ep+"?"+tc.query)
				require.Equal(t, http.StatusBadRequest, code, body)
				require.Equal(t, "application/json", hdr.Get("Content-Type"))
				var env struct{ Status, Error string }
				require.NoError(t, json.Unmarshal([]byte(body), &env), body)
				require.Equal(t, "error", env.Status)
				require.True(t, strings.HasPrefix(env.Error, "invalid "+tc.mention+":"), "%q names %s", env.Error, tc.mention)
			})
		}
	}
	// The download's path parameters are checked too.
	code, _, body := e.get(t, "/pressure-profiles/a%20b/p1/heap")
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, "invalid pod_name")
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Good values, empty values and parameters an endpoint does not take pass
// validation everywhere (the endpoints without a collector then say 503).
func TestGoodAndUnknownParametersPass(t *testing.T) {
	e := newEnv(t)
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{}
	}})
	for _, ep := range queryEndpoints {
		for _, q := range []string{
			"",
			"role=",
			"role=datanode-hot&_=1767225600000",
			"role=ROLE_DATA&refresh=1&refresh=2",
		} {
			code, _, body := e.get(t, ep+"?"+q)
			require.NotEqual(t, http.StatusBadRequest, code, "%s?%s: %s", ep, q, body)
		}
	}
	for _, ep := range filterEndpoints {
		q := "address=10.0.0.1:17912&pod_name=Data-0&agent_id=5b0c2f4e-0000-4000-8000-000000000000"
		code, _, body := e.get(t, ep+"?"+q)
		require.NotEqual(t, http.StatusBadRequest, code, "%s?%s: %s", ep, q, body)
	}
	q := url.Values{"start_time": {"2000-01-01T00:00:00Z"}, "end_time": {e.now.Add(23 * time.Hour).Format(time.RFC3339Nano)}}
	code, _, body := e.get(t, "/metrics-windows?"+q.Encode())
	require.Equal(t, http.StatusOK, code, body)
	for _, ep := range []string{"/health", "/-/healthy", "/-/ready"} {
		code, _, body := e.get(t, ep+"?%zz")
		require.Equal(t, http.StatusOK, code, "probes ignore the query: %s", body)
	}
}

// HEAD is answered like GET without a body on the probes and /metrics; a
// HEAD of /metrics collects nothing. Elsewhere it is a 405.
func TestHead(t *testing.T) {
	e := newEnv(t)
	fa := &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest { return &fodcv1.StreamMetricsRequest{} }}
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, fa)
	head := func(path string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodHead, e.srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Empty(t, body)
		return resp
	}
	for path, ctype := range map[string]string{
		"/health":    "application/json",
		"/-/healthy": "text/plain; charset=utf-8",
		"/-/ready":   "text/plain; charset=utf-8",
		"/metrics":   "text/plain; version=0.0.4; charset=utf-8",
	} {
		resp := head(path)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Equal(t, ctype, resp.Header.Get("Content-Type"), path)
	}
	fa.mu.Lock()
	require.Empty(t, fa.windows, "HEAD /metrics sent no command")
	fa.mu.Unlock()
	require.Equal(t, http.StatusBadRequest, head("/metrics?role=boss").StatusCode)

	for _, path := range []string{"/metrics-windows", "/cluster", "/cluster/topology", "/cluster/lifecycle", "/diagnostics", "/pressure-profiles"} {
		resp := head(path)
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, path)
		require.Equal(t, "GET", resp.Header.Get("Allow"), path)
	}
}

// A role narrows the topology to the matching nodes and the calls that
// touch them, and the consistency report to the matching groups.
func TestRoleNarrowsTopologyAndConsistency(t *testing.T) {
	node := func(name string, role databasev1.Role, tier string) *databasev1.Node {
		n := &databasev1.Node{Metadata: &commonv1.Metadata{Name: name}, Roles: []databasev1.Role{role}}
		if tier != "" {
			n.Labels = map[string]string{"type": tier}
		}
		return n
	}
	m := topology.Merged{
		Nodes: []*databasev1.Node{node("hot", databasev1.Role_ROLE_DATA, "hot"), node("warm", databasev1.Role_ROLE_DATA, "warm"), node("l", databasev1.Role_ROLE_LIAISON, "")},
		Calls: []*fodcv1.Call{{Id: "l-hot", Source: "l", Target: "hot"}, {Id: "l-warm", Source: "l", Target: "warm"}},
	}
	names := func(m topology.Merged) (nodes, calls []string) {
		for _, n := range m.Nodes {
			nodes = append(nodes, n.GetMetadata().GetName())
		}
		for _, c := range m.Calls {
			calls = append(calls, c.GetId())
		}
		return nodes, calls
	}
	for _, tc := range []struct {
		role         string
		nodes, calls []string
	}{
		{"datanode-hot", []string{"hot"}, []string{"l-hot"}},
		{"ROLE_DATA", []string{"hot", "warm"}, []string{"l-hot", "l-warm"}},
		{"liaison", []string{"l"}, []string{"l-hot", "l-warm"}},
		{"meta", nil, nil},
	} {
		r, err := roles.Parse(tc.role)
		require.NoError(t, err)
		nodes, calls := names(topologyOfRole(m, r))
		require.Equal(t, tc.nodes, nodes, tc.role)
		require.Equal(t, tc.calls, calls, tc.role)
	}

	rep := configreport.Report{
		Groups:      []configreport.GroupReport{{Role: "datanode-hot", Tier: "hot"}, {Role: "datanode-warm", Tier: "warm"}, {Role: "liaison"}},
		Unsupported: []string{"x"},
	}
	hot, err := roles.Parse("datanode-hot")
	require.NoError(t, err)
	got := reportOfRole(rep, hot)
	require.Len(t, got.Groups, 1)
	require.Equal(t, "datanode-hot", got.Groups[0].Role)
	require.Equal(t, []string{"x"}, got.Unsupported)
	require.Len(t, rep.Groups, 3, "the shared report is not modified")
}

// fuzzNow is the clock of the fuzz target.
var fuzzNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// FuzzParseParams feeds arbitrary query strings to the parameter parsers.
// They never panic; a rejection is always a 400 that names a parameter;
// and what they accept means the same when written back as a query and
// parsed again.
func FuzzParseParams(f *testing.F) {
	for _, seed := range []string{
		"", "role=datanode-hot", "role=ROLE_DATA", "role=boss", "role=liaison&role=meta", "role=",
		"address=10.1.1.1", "address=10.1.1.1:17912", "address=10.0.0.1:99999", "address=[::1]:80", "address=host-a.svc",
		"pod_name=WARM-0", "pod_name=a%20b", "agent_id=5b0c2f4e-0000-4000-8000-000000000000",
		"start_time=yesterday", "end_time=2026-13-01T00:00:00Z", "start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z",
		"start_time=2026-05-31T00:00:00.123456789%2B02:00&end_time=2026-06-01T00:00:00Z", "start_time=0000-01-01T00:00:00Z",
		"x=%zz", "a;b", "_=1&refresh=1&refresh=2",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return // query() turns this into a 400 naming "query"
		}
		fl, ferr := parseFilter(q)
		win, werr := parseWindow(q, fuzzNow)
		role, hasRole, rerr := parseRole(q)
		for _, err := range []error{ferr, werr, rerr} {
			var br *badRequest
			if err != nil && (!errors.As(err, &br) || !strings.HasPrefix(br.msg, "invalid ")) {
				t.Fatalf("%q: rejection %v is not a bad request naming a parameter", raw, err)
			}
		}
		// parseFilter reads the role first, as parseRole does.
		roleRejected := ferr != nil && strings.HasPrefix(ferr.Error(), "invalid role:")
		if (rerr != nil) != roleRejected {
			t.Fatalf("%q: parseRole and parseFilter disagree about role: %v, %v", raw, rerr, ferr)
		}
		if rerr == nil && ferr == nil && hasRole != fl.HasRole {
			t.Fatalf("%q: parseRole and parseFilter disagree about role presence", raw)
		}
		if ferr == nil {
			back := url.Values{}
			if fl.HasRole {
				back.Set("role", fl.Role.String())
			}
			for name, v := range map[string]string{"address": fl.Address, "pod_name": fl.PodName, "agent_id": fl.AgentID} {
				if v != "" {
					back.Set(name, v)
				}
			}
			again, err := parseFilter(back)
			if err != nil || again != fl {
				t.Fatalf("%q: filter %+v written back as %q parses as %+v, %v", raw, fl, back.Encode(), again, err)
			}
			if hasRole && role != fl.Role {
				t.Fatalf("%q: roles differ", raw)
			}
		}
		if werr == nil {
			for _, b := range []time.Time{win.Start, win.End} {
				if !b.IsZero() && (b.Before(minTime) || b.After(fuzzNow.Add(maxFuture))) {
					t.Fatalf("%q: accepted bound %s out of range", raw, b)
				}
			}
			if !win.Start.IsZero() && !win.End.IsZero() && win.Start.After(win.End) {
				t.Fatalf("%q: accepted start after end", raw)
			}
			back := url.Values{}
			if !win.Start.IsZero() {
				back.Set("start_time", win.Start.Format(time.RFC3339Nano))
			}
			if !win.End.IsZero() {
				back.Set("end_time", win.End.Format(time.RFC3339Nano))
			}
			again, err := parseWindow(back, fuzzNow)
			if err != nil || !again.Start.Equal(win.Start) || !again.End.Equal(win.End) {
				t.Fatalf("%q: window %+v written back as %q parses as %+v, %v", raw, win, back.Encode(), again, err)
			}
		}
	})
}
