package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

// Once Ready fires every endpoint shows the four real agents' data, and
// cancelling stops everything cleanly.
func TestDemoServesEveryEndpoint(t *testing.T) {
	ready := make(chan string, 1)
	var tempRoot string // written before Ready
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			GRPCListenAddr: "127.0.0.1:0", HTTPListenAddr: "127.0.0.1:0", ScrapeInterval: 200 * time.Millisecond,
			CrashAfter: 300 * time.Millisecond, PressureAfter: 300 * time.Millisecond,
			tempDir: func(root string) { tempRoot = root },
			Out:     &out, Ready: func(addr string) { ready <- addr },
		})
	}()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("demo ended early: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("demo not ready")
	}

	// Every agent answered once before Ready; on a loaded machine one may
	// still miss a scrape's budget, so a scrape that lacks an agent's data
	// is tried again (bounded) rather than taken as the demo's failure.
	var metrics string
	require.Eventually(t, func() bool {
		metrics = get(t, base+"/metrics")
		return strings.Contains(metrics, `node_type="warm"`) && strings.Contains(metrics, "banyandb_liaison_grpc_total_latency_bucket{")
	}, 30*time.Second, 100*time.Millisecond, "every agent's data in /metrics")
	for _, pod := range []string{"demo-liaison-0", "demo-data-hot-0", "demo-data-hot-1", "demo-data-warm-0"} {
		require.Contains(t, metrics, `pod_name="`+pod+`"`)
	}

	var health struct {
		Status       string `json:"status"`
		AgentsOnline int    `json:"agents_online"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, base+"/health")), &health))
	require.Equal(t, "healthy", health.Status)
	require.Equal(t, 4, health.AgentsOnline)

	var cluster struct {
		Nodes []struct {
			PodName   string         `json:"pod_name"`
			Secondary map[string]any `json:"secondary_addresses"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, base+"/cluster")), &cluster))
	require.Len(t, cluster.Nodes, 4)
	for _, n := range cluster.Nodes {
		require.Contains(t, n.Secondary, "gossip", n.PodName)
	}

	// The printed window URL gives history once a few scrapes have passed.
	i := strings.Index(out.String(), base+"/metrics-windows?")
	require.GreaterOrEqual(t, i, 0, out.String())
	windowURL := strings.Fields(out.String()[i:])[0]
	windowURL = strings.TrimSuffix(windowURL, "'")
	u, err := url.Parse(windowURL)
	require.NoError(t, err)
	require.NotEmpty(t, u.Query().Get("start_time"))
	require.Eventually(t, func() bool {
		var series []struct {
			Data []json.RawMessage `json:"data"`
		}
		if json.Unmarshal([]byte(get(t, windowURL)), &series) != nil || len(series) == 0 {
			return false
		}
		return len(series[0].Data) >= 3
	}, 20*time.Second, 50*time.Millisecond)

	t.Run("configuration", func(t *testing.T) {
		for _, path := range []string{"/cluster/config", "/cluster/config/consistency"} {
			require.Contains(t, out.String(), "curl -s "+base+path+"\n", "the instructions print %s", path)
		}
		var cfgs struct {
			Configurations []struct {
				PodName       string         `json:"pod_name"`
				Supported     bool           `json:"supported"`
				Source        string         `json:"source"`
				StartupParams map[string]any `json:"startup_params"`
				Errors        []string       `json:"collection_errors"`
			} `json:"configurations"`
		}
		require.NoError(t, json.Unmarshal([]byte(get(t, base+"/cluster/config")), &cfgs))
		require.Len(t, cfgs.Configurations, 4)
		for _, c := range cfgs.Configurations {
			require.True(t, c.Supported, c.PodName)
			require.Empty(t, c.Errors, c.PodName)
			require.Contains(t, c.Source, "pprof:http://127.0.0.1:", c.PodName)
			require.Equal(t, "<redacted>", c.StartupParams["etcd-password"], c.PodName)
		}

		var report struct {
			Groups []struct {
				Role        string   `json:"role"`
				Nodes       []string `json:"nodes"`
				Differences []struct {
					Param  string `json:"param"`
					Values []struct {
						Value string   `json:"value"`
						Nodes []string `json:"nodes"`
					} `json:"values"`
				} `json:"differences"`
			} `json:"groups"`
			Unsupported []string `json:"unsupported"`
		}
		require.NoError(t, json.Unmarshal([]byte(get(t, base+"/cluster/config/consistency")), &report))
		require.Empty(t, report.Unsupported)
		groups := map[string]int{}
		for i, g := range report.Groups {
			groups[g.Role] = i
		}
		require.Len(t, groups, 3)
		for role, i := range groups {
			g := report.Groups[i]
			if role != "datanode-hot" {
				require.Empty(t, g.Differences, role)
				continue
			}
			require.Equal(t, []string{"demo-data-hot-0", MisconfiguredPod}, g.Nodes)
			require.Len(t, g.Differences, 1, "only the deliberate difference; per-pod hosts, ports and paths are ignored: %+v", g.Differences)
			d := g.Differences[0]
			require.Equal(t, MisconfiguredFlag, d.Param)
			require.Len(t, d.Values, 2)
			require.Equal(t, "1s", d.Values[0].Value)
			require.Equal(t, []string{"demo-data-hot-0"}, d.Values[0].Nodes)
			require.Equal(t, "5s", d.Values[1].Value)
			require.Equal(t, []string{MisconfiguredPod}, d.Values[1].Nodes)
		}
	})

	t.Run("lifecycle", func(t *testing.T) {
		require.Contains(t, out.String(), "curl -s "+base+"/cluster/lifecycle\n")
		var lc struct {
			Groups []struct {
				Name    string `json:"name"`
				Catalog string `json:"catalog"`
			} `json:"groups"`
			Statuses []struct {
				PodName string `json:"pod_name"`
				Reports []struct {
					Filename   string `json:"filename"`
					ReportJSON string `json:"report_json"`
				} `json:"reports"`
			} `json:"lifecycle_statuses"`
		}
		require.NoError(t, json.Unmarshal([]byte(get(t, base+"/cluster/lifecycle")), &lc))
		var names []string
		for _, g := range lc.Groups {
			names = append(names, g.Name)
		}
		require.Equal(t, []string{"sw_metric", "sw_record", "sw_trace"}, names)
		require.Len(t, lc.Statuses, 4)
		for _, st := range lc.Statuses {
			require.Len(t, st.Reports, 2, st.PodName)
			require.True(t, json.Valid([]byte(st.Reports[0].ReportJSON)), st.PodName)
		}
	})

	t.Run("diagnostics", func(t *testing.T) {
		type record struct {
			PodName     string `json:"pod_name"`
			ArtifactDir string `json:"artifact_dir"`
			PanicRecord struct {
				Component string `json:"component"`
				Recovered bool   `json:"recovered"`
			} `json:"panic_record"`
		}
		// The artifact is written 300ms after the start and picked up
		// from a filesystem event; each /diagnostics call waits for the
		// agents' records, so this asks again until the record is there.
		var recs []record
		require.Eventually(t, func() bool {
			recs = nil
			return json.Unmarshal([]byte(get(t, base+"/diagnostics")), &recs) == nil && len(recs) > 0
		}, 30*time.Second, 50*time.Millisecond)
		require.Len(t, recs, 1)
		require.Equal(t, CrashPod, recs[0].PodName)
		require.Equal(t, "measure/flush", recs[0].PanicRecord.Component)
		require.True(t, recs[0].PanicRecord.Recovered)
	})

	t.Run("pressure profiles", func(t *testing.T) {
		type entry struct {
			PodName   string `json:"pod_name"`
			ProfileID string `json:"profile_id"`
			Profiles  []struct {
				Type string `json:"type"`
			} `json:"profiles"`
		}
		var entries []entry
		require.Eventually(t, func() bool {
			entries = nil
			return json.Unmarshal([]byte(get(t, base+"/pressure-profiles")), &entries) == nil && len(entries) > 0
		}, 30*time.Second, 50*time.Millisecond)
		require.Len(t, entries, 1)
		e := entries[0]
		require.Equal(t, PressurePod, e.PodName)
		require.Len(t, e.Profiles, 2)
		for _, typ := range []string{"heap", "goroutine"} {
			body := get(t, base+"/pressure-profiles/"+e.PodName+"/"+e.ProfileID+"/"+typ)
			prof, err := profile.Parse(strings.NewReader(body))
			require.NoError(t, err, typ)
			require.NotEmpty(t, prof.SampleType, typ)
			if typ == "goroutine" {
				require.NotEmpty(t, prof.Sample, typ)
			}
		}
	})

	t.Run("on-demand profile", func(t *testing.T) {
		require.Contains(t, out.String(), "curl -s -X POST '"+base+"/profiling?type=cpu&seconds=5&pod_name=demo-data-hot-0'")
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Post(base+"/profiling?type=cpu&seconds=1&pod_name=demo-data-warm-0", "", nil)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
		var started struct {
			Results []struct {
				ProfileID string `json:"profile_id"`
			} `json:"results"`
		}
		require.NoError(t, json.Unmarshal(body, &started))
		require.Len(t, started.Results, 1)
		id := started.Results[0].ProfileID
		require.Eventually(t, func() bool {
			var list []struct {
				ID     string `json:"profile_id"`
				Status string `json:"status"`
			}
			require.NoError(t, json.Unmarshal([]byte(get(t, base+"/profiling")), &list))
			for _, e := range list {
				if e.ID == id {
					require.NotEqual(t, "failed", e.Status)
					return e.Status == "done"
				}
			}
			return false
		}, 30*time.Second, 50*time.Millisecond)
		prof, err := profile.Parse(strings.NewReader(get(t, base+"/profiling/"+id)))
		require.NoError(t, err)
		require.Equal(t, "cpu", prof.PeriodType.Type)
	})

	cancel()
	require.NoError(t, <-done)
	require.NotEmpty(t, tempRoot)
	_, err = os.Stat(tempRoot)
	require.ErrorIs(t, err, fs.ErrNotExist, "the demo's temporary files are removed on exit")
}
