package pveapi

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestMain fails the package's tests if any goroutine outlives them or a
// temporary file is left behind.
func TestMain(m *testing.M) {
	// Retries are tested for their count, not their pacing.
	retryBackoff = 5 * time.Millisecond
	pollFirst, pollMax = 5*time.Millisecond, 20*time.Millisecond
	testenv.Main(m)
}

const (
	testSecret   = "0b7f6a1e-secret-5e4d-9c3b-2a1f0e9d8c7b"
	testToken    = "root@pam!ci=" + testSecret
	testPassword = "hunter2-password-x7"
	testTicket   = "PVE:root@pam:65F0A1B2::ticket-signature-q9w8e7"
	testCSRF     = "65F0A1B2:csrf-token-z1x2"
)

// fakePVE answers like pveproxy: token or ticket auth (CSRF on writes),
// PVE's JSON envelope, and per-route handlers.
type fakePVE struct {
	t      testing.TB
	mu     sync.Mutex
	routes map[string]http.HandlerFunc
	calls  map[string]int
	logins int
	// noAuth skips the credential check (a server that echoes them).
	noAuth bool
}

func newFake(t testing.TB) *fakePVE {
	return &fakePVE{t: t, routes: map[string]http.HandlerFunc{}, calls: map[string]int{}}
}

func (f *fakePVE) handle(route string, h http.HandlerFunc) { f.routes[route] = h }

func (f *fakePVE) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

func (f *fakePVE) loginCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins
}

func (f *fakePVE) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := strings.CutPrefix(r.URL.EscapedPath(), "/api2/json")
	if !ok {
		reply(w, 501, "no such uri", nil, nil)
		return
	}
	route := r.Method + " " + p
	f.mu.Lock()
	f.calls[route]++
	f.mu.Unlock()
	if route == "POST /access/ticket" {
		r.ParseForm()
		f.mu.Lock()
		f.logins++
		f.mu.Unlock()
		if r.PostForm.Get("username") != "root@pam" || r.PostForm.Get("password") != testPassword {
			reply(w, 401, "authentication failure", nil, nil)
			return
		}
		reply(w, 200, "", map[string]string{"ticket": testTicket, "CSRFPreventionToken": testCSRF, "username": "root@pam"}, nil)
		return
	}
	if !f.noAuth {
		if msg := checkAuth(r); msg != "" {
			reply(w, 401, msg, nil, nil)
			return
		}
	}
	h := f.routes[route]
	if h == nil {
		reply(w, 501, fmt.Sprintf("Method '%s %s' not implemented", r.Method, p), nil, nil)
		return
	}
	h(w, r)
}

// checkAuth is pveproxy's check: a ticket cookie (with the CSRF token on
// anything but GET) or an API token header.
func checkAuth(r *http.Request) string {
	if c, err := r.Cookie("PVEAuthCookie"); err == nil {
		// pveproxy unescapes the cookie, as PVE's clients escape it.
		if v, _ := url.QueryUnescape(c.Value); v != testTicket {
			return "invalid PVE ticket"
		}
		if r.Method != http.MethodGet && r.Header.Get("CSRFPreventionToken") != testCSRF {
			return "Permission denied - invalid csrf token"
		}
		return ""
	}
	if r.Header.Get("Authorization") != "PVEAPIToken="+testToken {
		return "invalid token value!"
	}
	return ""
}

// reply writes PVE's envelope.
func reply(w http.ResponseWriter, status int, msg string, data any, errs map[string]string) {
	body := map[string]any{"data": data}
	if errs != nil {
		body["errors"] = errs
	}
	if msg != "" {
		body["message"] = msg + "\n"
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func data(v any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { reply(w, 200, "", v, nil) }
}

func fail(status int, msg string, errs map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { reply(w, status, msg, nil, errs) }
}

// serve starts f over TLS and returns a client with the token, pinned to
// the server's certificate.
func (f *fakePVE) serve(t *testing.T) (*httptest.Server, *Client) {
	t.Helper()
	ts := newTLS(f)
	t.Cleanup(ts.Close)
	c := newClient(t, Config{URL: ts.URL, Token: testToken, Fingerprint: Fingerprint(ts.Certificate()), Timeout: 5 * time.Second})
	return ts, c
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%v): %v", cfg, err)
	}
	t.Cleanup(c.Close)
	return c
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// newTLS is httptest.NewTLSServer without the log line of each refused
// handshake (the pinning tests make them on purpose).
func newTLS(h http.Handler) *httptest.Server {
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	return ts
}
