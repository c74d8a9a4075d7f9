package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"syscall"
	"time"
)

// spawned is a proxy process started by the bench.
type spawned struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	done     chan error // receives Wait's result once
}

// freePort returns a loopback address with a port that was free a moment
// ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// spawnProxy starts path with --grpc-listen-addr and --http-listen-addr on
// free loopback ports plus args, and waits until both ports accept
// connections.
func spawnProxy(ctx context.Context, path string, args []string, stderr io.Writer, wait time.Duration) (*spawned, error) {
	grpcAddr, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pick a gRPC port: %w", err)
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pick an HTTP port: %w", err)
	}
	all := append([]string{"--grpc-listen-addr", grpcAddr, "--http-listen-addr", httpAddr}, args...)
	// Not tied to ctx: stop sends SIGTERM so that the proxy shuts down
	// cleanly.
	cmd := exec.Command(path, all...)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start proxy %s (--spawn-proxy): %w", path, err)
	}
	s := &spawned{cmd: cmd, grpcAddr: grpcAddr, httpAddr: httpAddr, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for _, addr := range []string{grpcAddr, httpAddr} {
		if err := s.waitListening(wctx, addr); err != nil {
			s.stop(time.Second)
			return nil, err
		}
	}
	return s, nil
}

// waitListening retries connecting to addr until it works, the process
// exits or ctx ends.
func (s *spawned) waitListening(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("proxy exited before listening on %s: %v", addr, err)
		case <-ctx.Done():
			return fmt.Errorf("proxy not listening on %s: %w", addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, waits up to grace and then kills the process.
func (s *spawned) stop(grace time.Duration) error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-s.done:
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signaled() {
			return nil
		}
		return err
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("proxy did not stop within %s; killed", grace)
	}
}

func (s *spawned) pid() int { return s.cmd.Process.Pid }
