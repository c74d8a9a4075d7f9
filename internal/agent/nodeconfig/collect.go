package nodeconfig

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Defaults of Options.
const (
	DefaultProcRoot   = "/proc"
	DefaultCgroupRoot = "/sys/fs/cgroup"
	DefaultEnvPrefix  = "BYDB_"
	// DefaultHTTPTimeout bounds the pprof request when Options.HTTPClient is
	// nil; the caller's context can shorten it.
	DefaultHTTPTimeout = 5 * time.Second
)

// MaxReadBytes bounds every file and HTTP body that Collect reads.
const MaxReadBytes = 1 << 20

// clockTicks is USER_HZ, the unit of the start time in /proc/<pid>/stat.
// It is 100 on every mainstream Linux architecture (amd64, arm64) and
// cannot be read without cgo.
const clockTicks = 100

// Sources of the startup parameters, in ExtNodeConfigRequest.source.
const (
	SourceOverride = "override"
	// SourcePprofPrefix is followed by the pprof URL.
	SourcePprofPrefix = "pprof:"
	// SourceProcPrefix is followed by the PID.
	SourceProcPrefix = "proc:"
)

// Keys of ExtNodeConfigRequest.runtime_config. A key is absent when the fact
// is unknown.
const (
	// KeyProgram is the node's argv[0].
	KeyProgram = "program"
	// KeyVersion is the node's version when its command line or its
	// <prefix>VERSION variable shows it.
	KeyVersion = "version"
	// KeyUptime is the node process's age in whole seconds.
	KeyUptime = "uptime_seconds"
	// KeyStartedAt is the node process's start time, RFC 3339, UTC.
	KeyStartedAt = "started_at"
	// KeyCPULimit is the cgroup v2 CPU limit in cores ("1.5"), or
	// "unlimited".
	KeyCPULimit = "cpu_limit"
	// KeyMemoryLimit is the cgroup v2 memory limit in bytes, or "unlimited".
	KeyMemoryLimit = "memory_limit_bytes"
	// KeyCgroup is the node's cgroup v2 path, relative to the cgroup root.
	KeyCgroup = "cgroup"
	// KeyGOMAXPROCS is the GOMAXPROCS variable of the node's environment.
	KeyGOMAXPROCS = "gomaxprocs"
	// KeyGOMEMLIMIT is the GOMEMLIMIT variable of the node's environment.
	KeyGOMEMLIMIT = "gomemlimit"
)

// Options say where Collect finds the node's configuration. The zero value
// collects nothing but the agent's parameters (and reports that no source of
// startup parameters is configured).
type Options struct {
	// PprofURL is the node's net/http/pprof cmdline page, such as
	// http://127.0.0.1:6060/debug/pprof/cmdline.
	PprofURL string
	// PID is the node's process id as seen under ProcRoot; 0 for none.
	PID int
	// ProcRoot is the proc file system; default DefaultProcRoot.
	ProcRoot string
	// CgroupRoot is the cgroup v2 mount; default DefaultCgroupRoot.
	CgroupRoot string
	// EnvPrefix selects the node's environment variables to report;
	// default DefaultEnvPrefix.
	EnvPrefix string
	// Cmdline overrides the node's command line: a shell-like line with the
	// program name first (see SplitShell and SplitProgram).
	Cmdline string
	// HTTPClient fetches PprofURL; nil means a client with
	// DefaultHTTPTimeout that keeps no idle connection (Collect runs
	// rarely, so nothing should linger between calls).
	HTTPClient *http.Client
	// AgentParams are the agent's own flags, reported redacted.
	AgentParams map[string][]string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.ProcRoot == "" {
		o.ProcRoot = DefaultProcRoot
	}
	if o.CgroupRoot == "" {
		o.CgroupRoot = DefaultCgroupRoot
	}
	if o.EnvPrefix == "" {
		o.EnvPrefix = DefaultEnvPrefix
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			Timeout: DefaultHTTPTimeout,
			// No Proxy: the node is local, HTTP_PROXY must not apply.
			Transport: &http.Transport{DisableKeepAlives: true},
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Collect gathers the node's configuration as o describes it. The startup
// parameters come from the first source that works, in this order: the
// Cmdline override, the PprofURL, /proc/<PID>/cmdline; the source field
// names it ("override", "pprof:<url>", "proc:<pid>"). With a PID, the
// node's environment variables that start with EnvPrefix come from
// /proc/<PID>/environ, and the runtime facts from /proc/<PID>/stat,
// /proc/stat (or /proc/uptime), /proc/<PID>/cgroup and the node's cgroup
// v2 cpu.max and memory.max (see the Key constants). Limits are reported
// only from the node's own cgroup: when it is not visible under CgroupRoot
// (a sidecar in another container usually cannot see it) they are left out
// rather than replaced by the agent's.
//
// Collect never fails: every problem is appended to errors and the rest of
// the report stands. Every value is redacted (Redact, RedactEnv,
// RedactValue), so no secret reaches the returned message. Collect is safe
// for concurrent use; it honours ctx for the HTTP request.
func Collect(ctx context.Context, o Options) *fodcv1.ExtNodeConfigRequest {
	o = o.withDefaults()
	c := &collector{o: o, runtime: make(map[string]string)}
	now := o.Now()

	argv, source := c.cmdline(ctx)
	program, args := SplitProgram(argv)
	params, positional := ParseArgs(args)
	if program != "" {
		c.runtime[KeyProgram] = program
	}

	var env map[string]string
	if o.PID > 0 {
		env = c.environ()
		c.processTimes(now)
		c.cgroupLimits()
	}
	selected := make(map[string]string)
	for k, v := range env {
		switch {
		case strings.HasPrefix(k, o.EnvPrefix):
			selected[k] = v
		case k == "GOMAXPROCS":
			c.runtime[KeyGOMAXPROCS] = v
		case k == "GOMEMLIMIT":
			c.runtime[KeyGOMEMLIMIT] = v
		}
	}
	if v := version(params, selected, o.EnvPrefix); v != "" {
		c.runtime[KeyVersion] = v
	}

	for i, a := range positional {
		positional[i] = RedactValue(a)
	}
	for k, v := range c.runtime {
		c.runtime[k] = RedactValue(v)
	}
	for i, e := range c.errs {
		c.errs[i] = RedactValue(e)
	}
	return &fodcv1.ExtNodeConfigRequest{
		CollectedAt:   timestamppb.New(now),
		StartupParams: toProto(Redact(params)),
		RuntimeConfig: c.runtime,
		Source:        RedactValue(source),
		Errors:        c.errs,
		AgentParams:   toProto(Redact(o.AgentParams)),
		Environment:   RedactEnv(selected),
		Args:          positional,
	}
}

// collector holds the state of one Collect call.
type collector struct {
	o       Options
	runtime map[string]string
	errs    []string
}

func (c *collector) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// cmdline returns the node's argv from the first source that works.
func (c *collector) cmdline(ctx context.Context) (argv []string, source string) {
	o := c.o
	if o.Cmdline != "" {
		argv, err := SplitShell(o.Cmdline)
		switch {
		case err != nil:
			c.fail("parse command line override: %v", err)
		case len(argv) == 0:
			c.fail("command line override is empty")
		default:
			return argv, SourceOverride
		}
	}
	if o.PprofURL != "" {
		argv, err := c.fetchPprof(ctx)
		if err == nil {
			return argv, SourcePprofPrefix + RedactValue(o.PprofURL)
		}
		c.fail("read command line from %s: %v", RedactValue(o.PprofURL), err)
	}
	if o.PID > 0 {
		b, err := readLimited(c.procPath("cmdline"))
		switch {
		case err != nil:
			c.fail("read command line of pid %d: %v", o.PID, err)
		case len(SplitCmdline(b)) == 0:
			c.fail("command line of pid %d is empty", o.PID)
		default:
			return SplitCmdline(b), SourceProcPrefix + strconv.Itoa(o.PID)
		}
	}
	if o.Cmdline == "" && o.PprofURL == "" && o.PID <= 0 {
		c.fail("no source of the node's command line: give a pprof cmdline URL, a PID or a command line override")
	}
	return nil, ""
}

func (c *collector) fetchPprof(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.o.PprofURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxReadBytes))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("unexpected status %s", resp.Status)
	}
	b, err := readAllLimited(resp.Body)
	if err != nil {
		return nil, err
	}
	argv := SplitCmdline(b)
	if len(argv) == 0 {
		return nil, errors.New("empty command line")
	}
	return argv, nil
}

// procPath returns <ProcRoot>/<PID>/<name>.
func (c *collector) procPath(name string) string {
	return filepath.Join(c.o.ProcRoot, strconv.Itoa(c.o.PID), name)
}

// environ reads the node's whole environment.
func (c *collector) environ() map[string]string {
	b, err := readLimited(c.procPath("environ"))
	if err != nil {
		c.fail("read environment of pid %d: %v", c.o.PID, err)
		return nil
	}
	env := make(map[string]string)
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if ok && k != "" {
			env[k] = v
		}
	}
	return env
}

// processTimes sets the start time and uptime of the node's process.
func (c *collector) processTimes(now time.Time) {
	ticks, err := c.startTicks()
	if err != nil {
		c.fail("read start time of pid %d: %v", c.o.PID, err)
		return
	}
	sinceBoot := time.Duration(ticks) * (time.Second / clockTicks)
	var started time.Time
	if btime, err := c.bootTime(); err == nil {
		started = btime.Add(sinceBoot)
	} else if up, err2 := c.systemUptime(); err2 == nil {
		started = now.Add(-(up - sinceBoot))
	} else {
		c.fail("read boot time: %v; %v", err, err2)
		return
	}
	uptime := max(now.Sub(started), 0)
	c.runtime[KeyStartedAt] = started.UTC().Format(time.RFC3339)
	c.runtime[KeyUptime] = strconv.FormatInt(int64(uptime/time.Second), 10)
}

// startTicks reads field 22 (starttime, in clock ticks since boot) of
// /proc/<pid>/stat. Field 2 (comm) is in parentheses and may hold spaces and
// parentheses, so the fields are counted from its last ')'.
func (c *collector) startTicks() (uint64, error) {
	b, err := readLimited(c.procPath("stat"))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat: no command name")
	}
	fields := strings.Fields(string(b[i+1:]))
	const starttime = 22 - 3 // fields[0] is field 3 (state)
	if len(fields) <= starttime {
		return 0, fmt.Errorf("malformed stat: %d fields", len(fields)+2)
	}
	ticks, err := strconv.ParseUint(fields[starttime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed stat start time: %w", err)
	}
	return ticks, nil
}

// bootTime reads the btime line of /proc/stat.
func (c *collector) bootTime() (time.Time, error) {
	b, err := readLimited(filepath.Join(c.o.ProcRoot, "stat"))
	if err != nil {
		return time.Time{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("malformed btime: %w", err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in stat")
}

// systemUptime reads the first field of /proc/uptime.
func (c *collector) systemUptime() (time.Duration, error) {
	b, err := readLimited(filepath.Join(c.o.ProcRoot, "uptime"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("empty uptime")
	}
	sec, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("malformed uptime: %w", err)
	}
	return time.Duration(sec * float64(time.Second)), nil
}

// cgroupLimits reports the CPU and memory limits of the node's cgroup.
func (c *collector) cgroupLimits() {
	b, err := readLimited(c.procPath("cgroup"))
	if err != nil {
		c.fail("read cgroup of pid %d: %v", c.o.PID, err)
		return
	}
	rel := ""
	found := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel, found = p, true
			break
		}
	}
	if !found {
		c.fail("pid %d has no cgroup v2 entry", c.o.PID)
		return
	}
	// A path that climbs out of the agent's cgroup namespace ("/../x") is a
	// cgroup the agent cannot see: do not report the agent's limits instead.
	if !strings.HasPrefix(rel, "/") || path.Clean(rel) != rel || strings.Contains(rel, "..") {
		c.fail("cgroup %q of pid %d is not visible to the agent", rel, c.o.PID)
		return
	}
	dir := filepath.Join(c.o.CgroupRoot, filepath.FromSlash(rel))
	c.runtime[KeyCgroup] = rel
	if v, err := readCPUMax(filepath.Join(dir, "cpu.max")); err != nil {
		c.fail("read cpu limit: %v", err)
	} else {
		c.runtime[KeyCPULimit] = v
	}
	if v, err := readMemoryMax(filepath.Join(dir, "memory.max")); err != nil {
		c.fail("read memory limit: %v", err)
	} else {
		c.runtime[KeyMemoryLimit] = v
	}
}

// readCPUMax reads a cgroup v2 cpu.max ("$MAX $PERIOD", MAX may be "max")
// as cores.
func readCPUMax(p string) (string, error) {
	b, err := readLimited(p)
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || len(f) > 2 {
		return "", fmt.Errorf("malformed %s", p)
	}
	if f[0] == "max" {
		return "unlimited", nil
	}
	quota, err := strconv.ParseFloat(f[0], 64)
	if err != nil || quota <= 0 {
		return "", fmt.Errorf("malformed quota in %s", p)
	}
	period := 100000.0 // the kernel's default when only the quota is given
	if len(f) == 2 {
		if period, err = strconv.ParseFloat(f[1], 64); err != nil || period <= 0 {
			return "", fmt.Errorf("malformed period in %s", p)
		}
	}
	return strconv.FormatFloat(quota/period, 'f', -1, 64), nil
}

// readMemoryMax reads a cgroup v2 memory.max (bytes or "max").
func readMemoryMax(p string) (string, error) {
	b, err := readLimited(p)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return "unlimited", nil
	}
	if _, err := strconv.ParseUint(v, 10, 64); err != nil {
		return "", fmt.Errorf("malformed %s", p)
	}
	return v, nil
}

// version finds the node's version in its parameters ("version",
// "node-version", "build-version" with a non-boolean value) or its
// <prefix>VERSION variable. It returns "" when neither shows it.
func version(params map[string][]string, env map[string]string, prefix string) string {
	for _, name := range []string{"version", "node-version", "build-version"} {
		if vs := params[name]; len(vs) > 0 {
			if v := vs[len(vs)-1]; v != "" && v != "true" && v != "false" {
				return v
			}
		}
	}
	return env[prefix+"VERSION"]
}

// readLimited reads a file of at most MaxReadBytes.
func readLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return readAllLimited(f)
}

// errTooLarge is returned for inputs over MaxReadBytes.
var errTooLarge = fmt.Errorf("larger than %d bytes", MaxReadBytes)

func readAllLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxReadBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxReadBytes {
		return nil, errTooLarge
	}
	return b, nil
}

// toProto converts parameters to their wire form. A nil map gives nil.
func toProto(params map[string][]string) map[string]*fodcv1.ExtParamValues {
	if params == nil {
		return nil
	}
	out := make(map[string]*fodcv1.ExtParamValues, len(params))
	for k, vs := range params {
		out[k] = &fodcv1.ExtParamValues{Values: vs}
	}
	return out
}

// MemoryLimit reads the memory limit of the cgroup of the process o.PID
// (cgroup v2 memory.max under o.CgroupRoot, the process found under
// o.ProcRoot). It reports false when the process or its cgroup is not
// visible, or the cgroup has no limit.
func MemoryLimit(o Options) (uint64, bool) {
	if o.PID <= 0 {
		return 0, false
	}
	if o.ProcRoot == "" {
		o.ProcRoot = DefaultProcRoot
	}
	if o.CgroupRoot == "" {
		o.CgroupRoot = DefaultCgroupRoot
	}
	c := &collector{o: o, runtime: map[string]string{}}
	c.cgroupLimits()
	v, ok := c.runtime[KeyMemoryLimit]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n > 0
}
