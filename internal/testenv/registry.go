package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	registryReadyTimeout = 15 * time.Second
	registryStopTimeout  = 5 * time.Second
	// Another process can take the port between our probe and the
	// registry's bind; a fresh port almost always wins the second time.
	registryBindAttempts = 3
	logTailBytes         = 4 << 10
)

// Registry starts Debian's docker-registry on a free loopback port with its
// storage in a temporary directory, waits until it serves /v2/, and stops it
// when the test ends. It returns "127.0.0.1:PORT". Nothing is shared
// between tests, so pushes in one can't satisfy pulls in another.
func Registry(t testing.TB) string {
	t.Helper()
	bin := RequireTool(t, "docker-registry")

	// t.TempDir must be called before t.Cleanup(stop) below: cleanups run
	// last-in first-out, so the registry is gone before its storage is
	// removed.
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	if err := os.Mkdir(storage, 0o755); err != nil {
		t.Fatalf("registry storage: %v", err)
	}

	var lastErr error
	for attempt := 1; attempt <= registryBindAttempts; attempt++ {
		addr, err := pickRegistryAddr()
		if err != nil {
			t.Fatalf("registry: find a free port: %v", err)
		}
		r, err := startRegistry(t, bin, dir, storage, addr, attempt)
		if err == nil {
			t.Cleanup(r.stop)
			return addr
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
		t.Logf("registry: %s was taken before the registry bound it, retrying on another port", addr)
	}
	t.Fatalf("registry: %v", lastErr)
	return ""
}

var errAddrInUse = errors.New("address already in use")

// pickRegistryAddr is a variable so tests can make Registry lose the port
// race on purpose.
var pickRegistryAddr = freeLoopbackAddr

type registryProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd.Wait has returned
	waitErr error         // valid after done is closed
	logPath string
	logFile *os.File
}

func startRegistry(t testing.TB, bin, dir, storage, addr string, attempt int) (*registryProc, error) {
	t.Helper()
	cfgPath := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
	if err := os.WriteFile(cfgPath, []byte(registryConfig(storage, addr)), 0o644); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	logPath := filepath.Join(dir, fmt.Sprintf("registry-%d.log", attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}

	cmd := exec.Command(bin, "serve", cfgPath)
	// REGISTRY_* variables override the config file (REGISTRY_HTTP_ADDR,
	// REGISTRY_AUTH, ...); one leaking in from the host would silently
	// change what we test against.
	cmd.Env = withoutPrefix(os.Environ(), "REGISTRY_")
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}

	r := &registryProc{t: t, cmd: cmd, done: make(chan struct{}), logPath: logPath, logFile: logFile}
	go func() {
		r.waitErr = cmd.Wait()
		close(r.done)
	}()

	if err := r.waitReady(t.Context(), addr); err != nil {
		r.stop()
		tail := r.logTail()
		if strings.Contains(tail, "address already in use") {
			return nil, fmt.Errorf("%w: %s\n--- registry log ---\n%s", errAddrInUse, addr, tail)
		}
		return nil, fmt.Errorf("%s serve on %s: %v\n--- %s (tail) ---\n%s", bin, addr, err, logPath, tail)
	}
	return r, nil
}

func registryConfig(storage, addr string) string {
	// Quoted with strconv so a temp path with odd characters stays valid
	// YAML. A fixed http secret only silences a warning that would crowd
	// the log tail shown on failure.
	return fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: nexcage-test
`, strconv.Quote(storage), strconv.Quote(addr))
}

func (r *registryProc) waitReady(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, registryReadyTimeout)
	defer cancel()

	// No keep-alives and no proxy: the probe must leave no idle connection
	// goroutines behind and must talk to the loopback port directly.
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	url := "http://" + addr + "/v2/"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()

	var lastErr error
	for {
		select {
		case <-r.done:
			return fmt.Errorf("exited before serving: %v", r.waitErr)
		default:
		}
		if err := probeV2(ctx, client, url); err == nil {
			// Serving a 200 is not proof it is ours: if our bind failed and
			// someone else answers on the port, our process is exiting.
			// Where the kernel can tell who holds the listening socket, ask
			// it rather than guess from timing.
			if _, p, err := net.SplitHostPort(addr); err == nil {
				port, _ := strconv.Atoi(p)
				if ours, known := listensOn(r.cmd.Process.Pid, port); known {
					if ours {
						return nil
					}
					lastErr = fmt.Errorf("%s answers, but from another process", url)
					goto wait
				}
			}
			select {
			case <-r.done:
				return fmt.Errorf("exited right after %s answered (port taken by another server?): %v", url, r.waitErr)
			case <-time.After(100 * time.Millisecond):
				return nil
			}
		} else {
			lastErr = err
		}
	wait:
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: last probe: %v", registryReadyTimeout, lastErr)
		case <-r.done:
			return fmt.Errorf("exited before serving: %v", r.waitErr)
		case <-tick.C:
		}
	}
}

func probeV2(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if v := resp.Header.Get("Docker-Distribution-Api-Version"); v != "registry/2.0" {
		return fmt.Errorf("GET %s: not a registry (Docker-Distribution-Api-Version %q)", url, v)
	}
	return nil
}

// stop is idempotent and bounded: SIGTERM, then SIGKILL, and it always
// reaps the process so no zombie or Wait goroutine outlives the test.
func (r *registryProc) stop() {
	select {
	case <-r.done:
	default:
		_ = termTree(r.cmd.Process)
		select {
		case <-r.done:
		case <-time.After(registryStopTimeout):
			r.t.Logf("registry: no exit %v after SIGTERM, killing", registryStopTimeout)
			_ = killTree(r.cmd.Process)
			<-r.done
		}
	}
	r.logFile.Close()
	if r.t.Failed() {
		r.t.Logf("registry log tail (%s):\n%s", r.logPath, r.logTail())
	}
}

func (r *registryProc) logTail() string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}

// freeLoopbackAddr asks the kernel for an unused port. The port is free
// only at the moment of asking; Registry retries when it loses that race.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", err
	}
	return addr, nil
}

func withoutPrefix(env []string, prefix string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// Registry404On127002 serves a registry that answers 404 to everything on
// 127.0.0.2, over TLS or plain HTTP, and returns its host:port. The
// registry client does not treat 127.0.0.2 as loopback (it speaks HTTPS
// to it), so plain HTTP and an unverifiable certificate both fail there.
// Where 127.0.0.2 is not a local address, the test is skipped.
func Registry404On127002(t testing.TB, tls bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2 (%v): the registry-transport cases need a second loopback address", err)
	}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.Listener.Close()
	srv.Listener = l
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return l.Addr().String()
}
