package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procSample is one reading of a process's memory and CPU.
type procSample struct {
	RSS int64         // VmRSS, bytes
	HWM int64         // VmHWM (peak RSS since start or the last reset), bytes
	CPU time.Duration // user + system time
}

// readProc reads /proc/<pid>/status and /proc/<pid>/stat.
func readProc(pid int) (procSample, error) {
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read proxy status: %w", err)
	}
	for line := range bytes.SplitSeq(status, []byte{'\n'}) {
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			s.RSS = parseKB(line)
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			s.HWM = parseKB(line)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read proxy stat: %w", err)
	}
	cpu, err := parseStatCPU(string(stat))
	if err != nil {
		return s, err
	}
	s.CPU = cpu
	return s, nil
}

// parseKB parses a "Name:   123 kB" line of /proc/<pid>/status into bytes.
func parseKB(line []byte) int64 {
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return 0
	}
	v, _ := strconv.ParseInt(f[1], 10, 64)
	return v << 10
}

// parseStatCPU returns utime+stime from /proc/<pid>/stat. The command name
// (field 2) may hold spaces and parentheses, so fields are counted from
// the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse proxy stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse proxy stat: %d fields", len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse proxy stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// resetPeak resets the process's VmHWM to its current RSS (writing 5 to
// clear_refs needs the same user as the process, or CAP_SYS_ADMIN).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// rssMonitor samples a process's RSS periodically and keeps the largest
// value, for when VmHWM cannot be reset.
type rssMonitor struct {
	pid    int
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex // guards max
	max int64
}

func startRSSMonitor(pid int, every time.Duration) *rssMonitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &rssMonitor{pid: pid, cancel: cancel}
	m.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m.sample()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return m
}

func (m *rssMonitor) sample() {
	s, err := readProc(m.pid)
	if err != nil {
		return
	}
	m.mu.Lock()
	m.max = max(m.max, s.RSS)
	m.mu.Unlock()
}

// stop ends sampling and returns the largest RSS seen.
func (m *rssMonitor) stop() int64 {
	m.cancel()
	m.wg.Wait()
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.max
}
