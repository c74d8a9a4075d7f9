package agent

import (
	"maps"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
)

// flagNodeCmdline is the flag whose value is a whole command line; its
// secrets are redacted word by word before it is reported.
const flagNodeCmdline = "node-cmdline"

// FlagParams returns the current value of every flag of fs, name -> values
// (one per element for slice and array flags), for the agent_params of the
// configuration report. --help and --version are not configuration and are
// left out. The values are not redacted: New does that.
func FlagParams(fs *pflag.FlagSet) map[string][]string {
	out := make(map[string][]string)
	fs.VisitAll(func(f *pflag.Flag) {
		switch f.Name {
		case "help", "version":
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			out[f.Name] = sv.GetSlice()
			return
		}
		out[f.Name] = []string{f.Value.String()}
	})
	return out
}

// Params returns c as the agent's flags would show it: FlagParams of a flag
// set bound to a copy of c. It lacks flags that are not part of Config
// (logging); main passes the full set with WithAgentParams.
func (c *Config) Params() map[string][]string {
	cp := *c
	cp.NodeLabels = maps.Clone(c.NodeLabels)
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	cp.RegisterFlags(fs)
	return FlagParams(fs)
}

// redactAgentParams returns a copy of params whose --node-cmdline value has
// the secrets of its words redacted (nodeconfig.RedactArgv); an unreadable
// line is redacted whole. nodeconfig.Collect redacts the rest by name.
func redactAgentParams(params map[string][]string) map[string][]string {
	out := maps.Clone(params)
	if vs, ok := out[flagNodeCmdline]; ok {
		red := make([]string, len(vs))
		for i, v := range vs {
			words, err := nodeconfig.SplitShell(v)
			if err != nil {
				red[i] = nodeconfig.Redacted
				continue
			}
			red[i] = nodeconfig.QuoteShell(nodeconfig.RedactArgv(words))
		}
		out[flagNodeCmdline] = red
	}
	return out
}

// nodeConfigOptions is what a collection of the node's configuration reads,
// from the flags, with agentParams (the agent's own flags) redacted.
// Validate must have passed.
func (c *Config) nodeConfigOptions(agentParams map[string][]string) nodeconfig.Options {
	o := nodeconfig.Options{
		PID:         c.NodePID,
		CgroupRoot:  c.NodeCgroupRoot,
		Cmdline:     c.NodeCmdline,
		AgentParams: redactAgentParams(agentParams),
		HTTPClient: &http.Client{
			Timeout: c.NodeConfigTimeout,
			// No Proxy: the node is local, HTTP_PROXY must not apply. No
			// idle connections: collections are rare.
			Transport: &http.Transport{DisableKeepAlives: true},
		},
	}
	if c.NodePprofAddr != "" {
		o.PprofURL, _ = c.pprofURL()
	}
	return o
}
