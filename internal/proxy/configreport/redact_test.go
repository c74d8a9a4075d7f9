package configreport

import (
	"testing"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// A forged report with secrets in plain sight is redacted by the proxy,
// whatever the agent did.
func TestRedactForgedReport(t *testing.T) {
	rep := &fodcv1.ExtNodeConfigRequest{
		StartupParams: map[string]*fodcv1.ExtParamValues{
			"etcd-password":         {Values: []string{"hunter2"}},
			"etcd-endpoints":        {Values: []string{"http://root:hunter2@etcd:2379"}},
			"measure-flush-timeout": {Values: []string{"1s"}},
		},
		AgentParams:   map[string]*fodcv1.ExtParamValues{"proxy-token": {Values: []string{"hunter2"}}},
		RuntimeConfig: map[string]string{"apiSecret": "hunter2", "opts": "a=1,token=hunter2"},
		Environment:   map[string]string{"BYDB_ETCD_PASSWORD": "hunter2"},
		Args:          []string{"banyand", "--etcd-password", "hunter2", "--etcd-password=hunter2"},
		Errors:        []string{"dial http://u:hunter2@x:1 failed"},
		Source:        "pprof:http://u:hunter2@node:2122/debug/pprof/cmdline",
	}
	got := Redact(rep)
	require.Equal(t, "hunter2", rep.StartupParams["etcd-password"].Values[0], "the input is not changed")
	require.NotContains(t, got.String(), "hunter2")
	require.Equal(t, "<redacted>", got.StartupParams["etcd-password"].Values[0])
	require.Equal(t, "pprof:http://<redacted>@node:2122/debug/pprof/cmdline", got.Source)
	require.Equal(t, "1s", got.StartupParams["measure-flush-timeout"].Values[0])
	require.Nil(t, Redact(nil))
}
