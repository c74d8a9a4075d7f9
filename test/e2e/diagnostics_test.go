package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/fixture"
)

// The recorded crash records of an upstream agent come out of
// /diagnostics with the pod and role of the registry.
func TestDiagnosticsFromRecording(t *testing.T) {
	p, _ := startProxy(t, nil)
	a, cfg := replay(t, p, "head-agent-crash-diagnostics")
	base := "http://" + p.HTTPAddr()
	r := get(t, base+"/diagnostics?pod_name="+cfg.Register.GetPodName())
	require.Equal(t, http.StatusOK, r.code, r.body)
	var items []struct {
		AgentID     string `json:"agent_id"`
		PodName     string `json:"pod_name"`
		Role        string `json:"role"`
		ArtifactDir string `json:"artifact_dir"`
		Files       []string
		PanicRecord struct {
			Component  string `json:"component"`
			PanicValue string `json:"panic_value"`
			Recovered  bool   `json:"recovered"`
		} `json:"panic_record"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &items))
	require.Len(t, items, 2)
	components := map[string]bool{}
	for _, it := range items {
		require.Equal(t, a.AgentID(), it.AgentID)
		require.Equal(t, "banyand-data-0", it.PodName)
		require.Equal(t, "ROLE_DATA", it.Role)
		require.NotEmpty(t, it.ArtifactDir)
		require.NotEmpty(t, it.PanicRecord.PanicValue)
		components[it.PanicRecord.Component] = true
	}
	require.True(t, components["fixture-debug-panic"], "components: %v", components)

	r = get(t, base+"/diagnostics?role=liaison")
	require.Equal(t, http.StatusOK, r.code)
	require.JSONEq(t, `[]`, r.body)
	r = get(t, base+"/diagnostics?role=bogus")
	require.Equal(t, http.StatusBadRequest, r.code)
}

// The recorded liaison's pressure profile is listed and downloads byte for
// byte, with upstream's headers.
func TestPressureProfilesFromRecording(t *testing.T) {
	p, _ := startProxy(t, nil)
	replay(t, p, "head-agent-liaison-fake")
	base := "http://" + p.HTTPAddr()
	r := get(t, base+"/pressure-profiles")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var list []struct {
		PodName   string `json:"pod_name"`
		Role      string `json:"role"`
		ProfileID string `json:"profile_id"`
		Profiles  []struct {
			Type string `json:"type"`
		} `json:"profiles"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &list))
	require.Len(t, list, 1)
	require.Equal(t, "banyand-liaison-0", list[0].PodName)
	require.Equal(t, "ROLE_LIAISON", list[0].Role)

	dir, err := fixture.Dir()
	require.NoError(t, err)
	want, err := os.ReadFile(filepath.Join(dir, "head-agent-liaison-fake.http", "pressure-profile_heap.pprof"))
	require.NoError(t, err)
	path := "/pressure-profiles/banyand-liaison-0/" + list[0].ProfileID + "/heap"
	r = get(t, base+path)
	require.Equal(t, http.StatusOK, r.code, r.body)
	require.Equal(t, "application/octet-stream", r.header.Get("Content-Type"))
	require.Equal(t, `attachment; filename="banyand-liaison-0-ROLE_LIAISON-`+list[0].ProfileID+`-heap.pprof"`, r.header.Get("Content-Disposition"))
	require.Equal(t, string(want), r.body)

	require.Equal(t, http.StatusBadRequest, get(t, base+"/pressure-profiles/banyand-liaison-0/"+list[0].ProfileID+"/cpu").code)
	require.Equal(t, http.StatusNotFound, get(t, base+"/pressure-profiles/banyand-liaison-0/20990101T000000.000000000Z/heap").code)
	require.Equal(t, http.StatusNotFound, get(t, base+"/pressure-profiles/no-such-pod/x/heap").code)
}
