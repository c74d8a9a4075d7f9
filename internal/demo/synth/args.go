package synth

import (
	"strconv"
	"strings"

	"github.com/fodc-go/fodc/internal/roles"
)

// Program is the argv[0] of every synthetic node, the binary's path in
// BanyanDB's container image.
const Program = "/banyand"

// CmdlinePath is where net/http/pprof, and so BanyanDB's pprof listener,
// serves the process's command line.
const CmdlinePath = "/debug/pprof/cmdline"

// ArgsOptions are the per-pod parts of a node's command line.
type ArgsOptions struct {
	// Host is the node's advertised host, such as
	// demo-data-hot-0.demo-data-hot.default.svc.cluster.local.
	Host string
	// GRPCPort is the node's gRPC port; a liaison's HTTP port follows it.
	GRPCPort int
	// PprofAddr is the pprof listener's address, host:port.
	PprofAddr string
	// Overrides are "--name=value" flags that replace the flag of the same
	// name, or are appended when the line has none.
	Overrides []string
}

// BanyandArgs returns a realistic command line of a BanyanDB node of n's
// role, without the program name: the sub-command (liaison or data; any
// other role gets standalone) and its flags, with every per-pod value (host,
// ports, addresses, data paths under /data/<pod>) taken from o and n.Pod,
// and the rest alike on every node of the role. The etcd password is a
// deliberate secret, for showing that agents redact it.
func BanyandArgs(n Node, o ArgsOptions) []string {
	common := []string{
		"--node-host-provider=flag",
		"--node-host=" + o.Host,
		"--grpc-port=" + strconv.Itoa(o.GRPCPort),
		"--etcd-endpoints=http://demo-etcd-0.demo-etcd:2379",
		"--etcd-username=banyandb",
		"--etcd-password=demo-etcd-secret",
		"--logging-level=info",
		"--logging-env=prod",
		"--observability-modes=prometheus",
		"--observability-listener-addr=:2121",
		"--pprof-listener-addr=" + o.PprofAddr,
		"--max-recv-msg-size=16mib",
	}
	var args []string
	switch n.Role.Kind {
	case roles.KindLiaison:
		args = append([]string{"liaison"}, common...)
		args = append(args,
			"--http-port="+strconv.Itoa(o.GRPCPort+1),
			"--http-grpc-addr=127.0.0.1:"+strconv.Itoa(o.GRPCPort),
			"--data-node-selector=type=hot",
			"--measure-write-timeout=15s",
			"--stream-write-timeout=15s",
		)
	case roles.KindData:
		args = append([]string{"data"}, common...)
		root := "/data/" + n.Pod
		args = append(args,
			"--measure-root-path="+root+"/measure",
			"--stream-root-path="+root+"/stream",
			"--property-root-path="+root+"/property",
			"--measure-flush-timeout=1s",
			"--stream-flush-timeout=1s",
			"--measure-max-fan-out-size=8388608",
		)
		if n.Role.Tier != "" {
			args = append(args, "--node-labels=type="+n.Role.Tier)
		}
	default:
		args = append([]string{"standalone"}, common...)
	}
	for _, ov := range o.Overrides {
		name, _, _ := strings.Cut(ov, "=")
		replaced := false
		for i, a := range args {
			if a == name || strings.HasPrefix(a, name+"=") {
				args[i], replaced = ov, true
			}
		}
		if !replaced {
			args = append(args, ov)
		}
	}
	return args
}
