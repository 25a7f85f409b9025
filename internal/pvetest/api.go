package pvetest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// API is a running stand-in of a PVE node's HTTP API (testdata/pve as
// pve-api) over the StandIn's state: a CT created through it is in `pct
// list`, and the other way round. It speaks HTTPS with a self-signed
// certificate made at start.
type API struct {
	// URL is the server's base, https://127.0.0.1:PORT (paths go under
	// /api2/json).
	URL string
	// Fingerprint is the certificate's SHA-256, as PVE shows it
	// (AB:CD:...).
	Fingerprint string
	// CertPEM is the certificate.
	CertPEM []byte
	// LogPath is the request log: one JSON object per request (see
	// APIRequest).
	LogPath string

	s        *StandIn
	authMu   sync.Mutex
	auth     apiAuth
	stopped  bool
	stop     func()
	logStart int64 // this server's lines start there
}

type apiAuth struct {
	Tokens map[string]apiToken `json:"tokens"`
	Users  map[string]apiUser  `json:"users"`
}

type apiToken struct {
	Secret string              `json:"secret"`
	ACL    map[string][]string `json:"acl"`
}

type apiUser struct {
	Password string              `json:"password"`
	ACL      map[string][]string `json:"acl"`
}

// APIOptions tune the server.
type APIOptions struct {
	// Env is appended to the StandIn's environment (PVE_VERSION=9.2.0).
	Env []string
	// TaskDelay keeps each finished task "running" that long, so that
	// clients must wait on their tasks as on a real node.
	TaskDelay time.Duration
}

// APIRequest is one line of the server's request log.
type APIRequest struct {
	Method string            `json:"method"`
	Path   string            `json:"path"` // under /api2/json
	Params map[string]string `json:"params"`
	// Auth is the token ("user@realm!name") or user the request acted
	// as; empty when it was refused before.
	Auth   string            `json:"auth"`
	Status int               `json:"status"`
	Error  string            `json:"error"`
	Errors map[string]string `json:"errors"`
	// Check says who judged the parameters: "pve" (Proxmox's own schema,
	// through the oracle), "hand" (a pve-manager method, checked by the
	// stand-in after pve-manager's schema), "none" (no oracle), or ""
	// when the request was refused before (auth, permission).
	Check string `json:"check"`
	// Handler is PVE's name for the method (create_vm, upload, ...),
	// when the oracle judged it.
	Handler string `json:"handler"`
	// Event is set on the server's own lines ("start"); such lines carry
	// no request.
	Event  string `json:"event"`
	Oracle string `json:"oracle"`
}

// StartAPI starts the stand-in API server on a loopback port and stops
// it when the test ends. With NEXCAGE_PVE_ORACLE set (tests that need the
// check call pveoracle.Require first) every request's parameters are
// judged by Proxmox's own API schema; without it the server says so in
// its log and checks only what the CLI stand-in checks.
func (s *StandIn) StartAPI(t testing.TB, opts APIOptions) *API {
	t.Helper()
	bin, err := os.Readlink(filepath.Join(s.BinDir, "pct"))
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(s.BinDir, "pve-api")
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink(bin, link); err != nil {
			t.Fatal(err)
		}
	}
	a := &API{s: s, LogPath: s.Path("var/log/pve-api/requests.log")}
	if fi, err := os.Stat(a.LogPath); err == nil {
		a.logStart = fi.Size()
	}
	a.auth = apiAuth{Tokens: map[string]apiToken{}, Users: map[string]apiUser{}}
	if err := os.MkdirAll(s.Path("etc/pve/priv"), 0o700); err != nil {
		t.Fatal(err)
	}
	a.writeAuth(t)
	if err := os.MkdirAll(s.Path("var/log/pve-api"), 0o755); err != nil {
		t.Fatal(err)
	}
	errPath := s.Path("var/log/pve-api/server.log")
	errFile, err := os.OpenFile(errPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--listen", "127.0.0.1:0"}
	if opts.TaskDelay > 0 {
		args = append(args, "--task-delay", opts.TaskDelay.String())
	}
	cmd := exec.Command(link, args...)
	cmd.Env = append(append([]string(nil), s.Env...), opts.Env...)
	cmd.Stderr = errFile // an *os.File: no copying goroutine to leak
	out, err := cmd.StdoutPipe()
	if err != nil {
		errFile.Close()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		errFile.Close()
		t.Fatal(err)
	}
	errFile.Close()
	stop := func() {
		if a.stopped {
			return
		}
		a.stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	a.stop = stop
	t.Cleanup(stop)
	// The server writes one line once it listens (with the oracle, after
	// PVE's modules are loaded and its control request was refused).
	killer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	killer.Stop()
	if err != nil {
		stop()
		b, _ := os.ReadFile(errPath)
		t.Fatalf("the stand-in API server did not start: %v\n%s", err, b)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ready" {
		stop()
		t.Fatalf("the stand-in API server said %q", line)
	}
	a.URL, a.Fingerprint = f[1], f[2]
	if a.CertPEM, err = os.ReadFile(s.Path("run/pve-api/cert.pem")); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *API) writeAuth(t testing.TB) {
	t.Helper()
	b, err := json.MarshalIndent(a.auth, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := a.s.Path("etc/pve/priv/nexcage-api-auth.json")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// AddToken configures an API token ("ci@pve!deploy") with privileges per
// path (they propagate below it; "*" is every privilege) and returns the
// value of the Authorization header that authenticates with it,
// "PVEAPIToken=ci@pve!deploy=SECRET".
func (a *API) AddToken(t testing.TB, tokenid string, acl map[string][]string) string {
	t.Helper()
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	secret := h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32] // a UUID, as PVE's
	a.authMu.Lock()
	defer a.authMu.Unlock()
	a.auth.Tokens[tokenid] = apiToken{Secret: secret, ACL: acl}
	a.writeAuth(t)
	return "PVEAPIToken=" + tokenid + "=" + secret
}

// AddUser configures a user ("ci@pve", or root@pam, who may do
// anything) for ticket logins.
func (a *API) AddUser(t testing.TB, userid, password string, acl map[string][]string) {
	t.Helper()
	a.authMu.Lock()
	defer a.authMu.Unlock()
	a.auth.Users[userid] = apiUser{Password: password, ACL: acl}
	a.writeAuth(t)
}

// Client is an HTTP client that trusts exactly the server's certificate,
// as a client pinning its fingerprint would.
func (a *API) Client() *http.Client {
	want := a.Fingerprint
	return &http.Client{
		Timeout: 5 * time.Minute,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				InsecureSkipVerify: true, // verified by fingerprint below
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					if len(raw) == 0 {
						return errors.New("no certificate")
					}
					sum := sha256.Sum256(raw[0])
					got := strings.ToUpper(hex.EncodeToString(sum[:]))
					if strings.ReplaceAll(want, ":", "") != got {
						return fmt.Errorf("certificate fingerprint %s is not the pinned one", got)
					}
					return nil
				},
			},
			DisableKeepAlives: true,
		},
	}
}

// Stop stops the server (it is stopped at the end of the test anyway).
func (a *API) Stop(t testing.TB) {
	t.Helper()
	a.stop()
}

// log is this server's part of the request log.
func (a *API) log(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < a.logStart {
		t.Fatalf("%s shrank", a.LogPath)
	}
	return b[a.logStart:]
}

// Requests reads the requests this server logged (its own lines left
// out).
func (a *API) Requests(t testing.TB) []APIRequest {
	t.Helper()
	b := a.log(t)
	var out []APIRequest
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r APIRequest
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("request log line %q: %v", line, err)
		}
		if r.Event == "" {
			out = append(out, r)
		}
	}
	return out
}

// CheckJudged fails the test unless every request this server received
// had its parameters judged: by Proxmox's own schema (Check "pve"), or,
// for pve-manager's methods, which the oracle does not hold, by hand
// ("hand"). Requests refused before their parameters are looked at (401,
// 403 of a declared permission, 501 for a method PVE does not have) have
// nothing to judge; so has nothing when the server runs without the
// oracle, which fails the test. It returns the number of requests. A
// request PVE's schema refused is judged: Status 400 with Errors.
func (a *API) CheckJudged(t testing.TB) int {
	t.Helper()
	reqs := a.Requests(t)
	for _, r := range reqs {
		manager := r.Path == "/version" || r.Path == "/nodes" || strings.HasPrefix(r.Path, "/cluster/") || strings.Contains(r.Path, "/tasks/")
		switch {
		case r.Check == "" && (r.Status == 401 || r.Status == 403 || r.Status == 501):
		case manager && r.Check != "hand":
			t.Errorf("%s %s: parameters checked %q, want by hand (a pve-manager method)", r.Method, r.Path, r.Check)
		case !manager && r.Check != "pve":
			t.Errorf("%s %s: parameters checked %q, want by PVE's own schema", r.Method, r.Path, r.Check)
		}
	}
	return len(reqs)
}

// OracleNote is what the server logged at start about the oracle check
// ("on: ..." or "off: ...").
func (a *API) OracleNote(t testing.TB) string {
	t.Helper()
	b := a.log(t)
	for _, line := range bytes.Split(b, []byte("\n")) {
		var r APIRequest
		if json.Unmarshal(line, &r) == nil && r.Event == "start" {
			return r.Oracle
		}
	}
	return ""
}

// AddSharedStorage adds a directory storage marked shared (the same
// files on every node, as NFS or CephFS) holding templates and container
// volumes, and returns its template directory.
func (s *StandIn) AddSharedStorage(t testing.TB, id string) string {
	t.Helper()
	dir := s.Path("mnt/pve/" + id)
	for _, d := range []string{"mnt", "mnt/pve", "mnt/pve/" + id, "mnt/pve/" + id + "/template", "mnt/pve/" + id + "/template/cache"} {
		if err := os.MkdirAll(s.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(s.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(s.Path("etc/pve/storage.cfg"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "\ndir: %s\n\tpath %s\n\tcontent vztmpl,rootdir\n\tshared 1\n", id, dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "template/cache")
}
