// Package nodeconfig collects the configuration of the BanyanDB node that an
// agent runs beside, for the proxy's /cluster/config endpoint and its
// consistency report (DESIGN.md §1, §1.4).
//
// Everything here is a pure function of its inputs: the node's command line
// (from an override, the node's net/http/pprof /debug/pprof/cmdline endpoint
// or /proc/<pid>/cmdline), its environment (/proc/<pid>/environ), a few
// runtime facts (/proc and cgroup v2 files) and the agent's own flags. The
// file system roots and the clock are options so that tests can fake them.
//
// Secrets are redacted at the source: Collect never returns a value whose
// parameter or variable name looks secret (see IsSecret), nor the password
// of a URL, nor the value of a secret-named key=value pair inside a value
// (see RedactValue). The proxy never sees them.
//
// Command lines are parsed without the node's flag definitions, so ParseArgs
// has to guess in one case: a flag written without "=" and followed by a
// token that is not a flag takes that token as its value. "--debug data"
// therefore reads as debug=data, never as the boolean flag debug followed by
// the positional argument data. BanyanDB puts its sub-command (data,
// liaison, standalone, ...) before its flags, where the guess cannot go
// wrong.
package nodeconfig
