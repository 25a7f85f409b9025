package main

// pve-api: the HTTP API of a PVE node (pveproxy on port 8006), for the
// calls nexcage makes over it. It runs the same Host functions as pct and
// pvesh, so a CT created here is in `pct list` and the other way round.
//
// Every request's parameters are judged by Proxmox's own API schema when
// $NEXCAGE_PVE_ORACLE names the oracle (internal/pveoracle's
// api-validate.pl: find_handler + PVE::JSONSchema::validate), for the
// paths whose methods live in the oracle's sources:
//   /nodes/{node}/lxc/...      pve-container (PVE::API2::LXC, ::Config, ::Status)
//   /nodes/{node}/storage/...  pve-storage (PVE::API2::Storage::Status, ::Content)
//   /access/ticket             pve-access-control (PVE::API2::AccessControl)
// pve-manager's methods are not in the oracle; their parameters are
// checked here by hand, after pve-manager's schema:
//   GET /version               no parameters
//   GET /cluster/nextid        vmid (pve-vmid, optional)
//   GET /cluster/resources     type (enum vm, storage, node, sdn, pool; optional)
//   GET /nodes                 no parameters
//   GET /nodes/{node}/tasks/{upid}/status, /log   node, upid (pve-upid), start, limit
// The stand-in's own checks (options.go) apply on top, as they do for pct.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nexcage/nexcage/internal/pveoracle"
)

// apiStateDir holds what a test reads to reach the server: url,
// fingerprint, cert.pem (written once it listens).
const apiStateDir = "run/pve-api"

// apiLogFile receives one JSON object per request.
const apiLogFile = "var/log/pve-api/requests.log"

// apiAuthFile configures tokens and users (read on every request, so a
// test may add some while the server runs):
//
//	{"tokens": {"ci@pve!deploy": {"secret": "...", "acl": {"/storage/local": ["Datastore.AllocateTemplate"]}}},
//	 "users":  {"ci@pve": {"password": "...", "acl": {"/": ["VM.Audit"]}}}}
//
// An acl maps a path to privileges, which propagate to the paths below
// it; "*" is every privilege. root@pam (by ticket) may do anything.
const apiAuthFile = "etc/pve/priv/nexcage-api-auth.json"

type apiAuthConfig struct {
	Tokens map[string]struct {
		Secret string              `json:"secret"`
		ACL    map[string][]string `json:"acl"`
	} `json:"tokens"`
	Users map[string]struct {
		Password string              `json:"password"`
		ACL      map[string][]string `json:"acl"`
	} `json:"users"`
}

type apiServer struct {
	h      *Host
	oracle *pveoracle.APIValidator
	delay  time.Duration // how long a finished task still reads "running"

	logMu sync.Mutex
	log   *os.File

	mu      sync.Mutex
	tasks   map[string]*apiTask
	tickets map[string]string // ticket -> userid
	seq     int
}

func apiMain(h *Host, args []string) error {
	listen := "127.0.0.1:0"
	var delay time.Duration
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--listen":
			i++
			if i == len(args) {
				return errors.New("--listen needs an address")
			}
			listen = args[i]
		case "--task-delay":
			i++
			if i == len(args) {
				return errors.New("--task-delay needs a duration")
			}
			d, err := time.ParseDuration(args[i])
			if err != nil {
				return err
			}
			delay = d
		default:
			return fmt.Errorf("usage: pve-api [--listen ADDR] [--task-delay DURATION] (unknown %q)", args[i])
		}
	}
	// Plain HTTP is not PVE's, and a pinned fingerprint needs TLS.
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--listen %s: the stand-in API listens on loopback only", listen)
	}
	dir := h.path(apiStateDir)
	for _, d := range []string{dir, filepath.Dir(h.path(apiLogFile)), h.path("var/tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(h.path(apiLogFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	s := &apiServer{h: h, delay: delay, log: logf, tasks: map[string]*apiTask{}, tickets: map[string]string{}}

	oracleNote := "off: " + pveoracle.Env + " is not set, so requests are checked only by the stand-in's own schema"
	if od := os.Getenv(pveoracle.Env); od != "" {
		v, ok := pveoracle.ByPVE(fmt.Sprintf("%d.%d", h.Version.major, h.Version.minor))
		if !ok {
			return fmt.Errorf("the oracle holds no pve-container for PVE %s", h.Version.raw)
		}
		s.oracle, err = pveoracle.StartAPIValidator(od, v, dir, os.Stderr)
		if err != nil {
			return err
		}
		defer s.oracle.Close()
		oracleNote = "on: PVE's schema from " + filepath.Join(od, v.Src)
	}
	s.logLine(map[string]any{"time": time.Now().UTC().Format(time.RFC3339), "event": "start", "pve": h.Version.raw, "oracle": oracleNote})
	fmt.Fprintf(os.Stderr, "pve-api: oracle %s\n", oracleNote)

	cert, fp, err := selfSignedCert(h.Node)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	url := "https://" + ln.Addr().String()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		// pveproxy speaks HTTP/1.1 only; the reason phrase carries PVE's
		// message, which HTTP/2 has no place for.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	for name, body := range map[string]string{"cert.pem": string(certPEM), "fingerprint": fp + "\n", "url": url + "\n"} {
		if err := writeFileAtomic(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(ln, srv.TLSConfig)) }()
	// The ready line: the caller reads it from our stdout.
	fmt.Printf("ready %s %s\n", url, fp)
	os.Stdout.Close()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-done:
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

// selfSignedCert is what pve-cluster generates for a node: a certificate
// for the node's name, here also for 127.0.0.1 and localhost. The
// fingerprint is printed as PVE shows it (SHA-256, colon-separated).
func selfSignedCert(node string) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: node + ".local", Organization: []string{"PVE Cluster Node"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{node, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, strings.Join(parts, ":"), nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp.%d", path, os.Getpid())
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ---- errors and responses ----

// apiError is an HTTP error as PVE's REST server sends it: the status, the
// message in the reason phrase, and for 400 the per-parameter errors.
type apiError struct {
	code   int
	msg    string
	errors map[string]string
}

func (e *apiError) Error() string { return e.msg }

func permError(what string) error {
	return &apiError{code: http.StatusForbidden, msg: "Permission check failed (" + what + ")"}
}

func paramErr(errs map[string]string) *apiError {
	return &apiError{code: http.StatusBadRequest, msg: "Parameter verification failed.", errors: errs}
}

// toAPIError maps the Host functions' errors: PVE's parameter exceptions
// are 400, anything else a method dies with is 500.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var pe *paramError
	if errors.As(err, &pe) {
		return paramErr(pe.errs)
	}
	return &apiError{code: http.StatusInternalServerError, msg: strings.TrimRight(err.Error(), "\n")}
}

// respond writes {"data": ...} (and extra top-level keys, e.g. total). An
// error's message goes into the reason phrase, as pveproxy sends it;
// net/http cannot set one, so the connection is taken over for errors.
func respond(w http.ResponseWriter, r *http.Request, data any, extra map[string]any, ae *apiError) {
	body := map[string]any{"data": data}
	for k, v := range extra {
		body[k] = v
	}
	if ae == nil {
		b, _ := json.Marshal(body)
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Write(b)
		return
	}
	body["data"] = nil
	body["message"] = ae.msg + "\n"
	if ae.errors != nil {
		body["errors"] = ae.errors
	}
	b, _ := json.Marshal(body)
	reason := strings.Join(strings.Fields(strings.ReplaceAll(ae.msg, "\n", " ")), " ")
	// Whatever the client still sends is read first, or closing the
	// connection would reset it before it reads the answer.
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<30))
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.WriteHeader(ae.code)
		w.Write(b)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", ae.code, reason, len(b))
	buf.Write(b)
	buf.Flush()
}

// ---- auth ----

// principal is who a request acts as.
type principal struct {
	user, token string // token: the token's name, "" for a user
	acl         map[string][]string
	ticket      bool
}

// id is PVE's name for the principal in task ids and logs.
func (p *principal) id() string {
	if p.token != "" {
		return p.user + "!" + p.token
	}
	return p.user
}

func (p *principal) allowed(path, priv string) bool {
	if p.user == "root@pam" && p.token == "" {
		return true
	}
	for ap, privs := range p.acl {
		ap = "/" + strings.Trim(ap, "/")
		if ap != "/" && ap != path && !strings.HasPrefix(path, ap+"/") {
			continue
		}
		for _, x := range privs {
			if x == priv || x == "*" {
				return true
			}
		}
	}
	return false
}

// check is RPCEnvironment::check: every privilege on the path.
func (p *principal) check(path string, privs ...string) error {
	for _, x := range privs {
		if !p.allowed(path, x) {
			return permError(path + ", " + x)
		}
	}
	return nil
}

// checkAny is RPCEnvironment::check_any.
func (p *principal) checkAny(path string, privs ...string) error {
	for _, x := range privs {
		if p.allowed(path, x) {
			return nil
		}
	}
	return permError(path + ", " + strings.Join(privs, "|"))
}

func (s *apiServer) authConfig() (*apiAuthConfig, error) {
	var c apiAuthConfig
	b, err := os.ReadFile(s.h.path(apiAuthFile))
	if errors.Is(err, os.ErrNotExist) {
		return &c, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %v", apiAuthFile, err)
	}
	return &c, nil
}

var tokenHeaderRE = regexp.MustCompile(`^PVEAPIToken[= ]([^\s!@]+@[^\s!]+)!([^\s=]+)=(\S+)$`)

// authenticate is pveproxy's auth_handler: an API token in the
// Authorization header, or a ticket in the PVEAuthCookie cookie (with the
// CSRFPreventionToken header on writes).
func (s *apiServer) authenticate(r *http.Request) (*principal, *apiError) {
	unauth := func(msg string) *apiError { return &apiError{code: http.StatusUnauthorized, msg: msg} }
	cfg, err := s.authConfig()
	if err != nil {
		return nil, &apiError{code: http.StatusInternalServerError, msg: err.Error()}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		m := tokenHeaderRE.FindStringSubmatch(h)
		if m == nil {
			return nil, unauth("no tokenid specified")
		}
		tokenid := m[1] + "!" + m[2]
		tok, ok := cfg.Tokens[tokenid]
		if !ok {
			return nil, unauth(fmt.Sprintf("no such token '%s' for user '%s'", m[2], m[1]))
		}
		if tok.Secret == "" || tok.Secret != m[3] {
			return nil, unauth("invalid token value!")
		}
		return &principal{user: m[1], token: m[2], acl: tok.ACL}, nil
	}
	c, err := r.Cookie("PVEAuthCookie")
	if err != nil || c.Value == "" {
		return nil, unauth("No ticket")
	}
	ticket, err := url.QueryUnescape(c.Value)
	if err != nil {
		ticket = c.Value
	}
	s.mu.Lock()
	user, ok := s.tickets[ticket]
	s.mu.Unlock()
	if !ok {
		return nil, unauth("authentication failure")
	}
	if r.Method != http.MethodGet && r.Header.Get("CSRFPreventionToken") != csrfToken(ticket) {
		return nil, unauth("Permission denied - invalid csrf token")
	}
	u := cfg.Users[user]
	return &principal{user: user, acl: u.ACL, ticket: true}, nil
}

// csrfToken binds the CSRF token to the ticket, so it needs no state.
func csrfToken(ticket string) string {
	sum := sha256.Sum256([]byte("csrf:" + ticket))
	_, ts, _ := strings.Cut(strings.TrimPrefix(ticket, "PVE:"), ":")
	ts, _, _ = strings.Cut(ts, ":")
	return ts + ":" + hex.EncodeToString(sum[:16])
}

// ---- tasks ----

// apiTask is a worker task (PVE::RESTEnvironment::fork_worker). The
// stand-in does the work before it answers, so a task is done when its
// UPID is returned; it reads "running" for the server's task delay still,
// so that clients have to wait on it as on a real node.
type apiTask struct {
	upid, node, typ, id, user string
	pid, pstart               int
	start                     time.Time

	mu    sync.Mutex
	lines []string
	part  string
	done  time.Time
	exit  string
}

func (t *apiTask) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part += string(b)
	for {
		line, rest, ok := strings.Cut(t.part, "\n")
		if !ok {
			break
		}
		t.lines = append(t.lines, line)
		t.part = rest
	}
	return len(b), nil
}

func (t *apiTask) finish(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.part != "" {
		t.lines = append(t.lines, t.part)
		t.part = ""
	}
	if err != nil {
		msg := strings.TrimRight(err.Error(), "\n")
		t.lines = append(t.lines, "TASK ERROR: "+msg)
		t.exit = msg
	} else {
		t.lines = append(t.lines, "TASK OK")
		t.exit = "OK"
	}
	t.done = time.Now()
}

func (s *apiServer) newTask(node, typ, id, user string) *apiTask {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	t := &apiTask{node: node, typ: typ, id: id, user: user, pid: os.Getpid() + s.seq, pstart: 1000000 + s.seq, start: time.Now()}
	t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, t.pid, t.pstart, t.start.Unix(), typ, id, user)
	s.tasks[t.upid] = t
	return t
}

func (s *apiServer) dropTask(t *apiTask) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tasks, t.upid)
}

// runTask runs a method's worker: its output is the task log, its error
// the exit status; the request itself succeeds with the UPID.
func (s *apiServer) runTask(c *apiCall, node, typ, id string, fn func(out io.Writer) error) (any, error) {
	t := s.newTask(node, typ, id, c.p.id())
	t.finish(fn(t))
	return t.upid, nil
}

// upidRE is PVE::Tools::upid_decode's pattern.
var upidRE = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$`)

// ---- requests ----

// apiCall is one request being served.
type apiCall struct {
	r      *http.Request
	p      *principal
	m      []string          // the route's submatches
	raw    map[string]any    // parameters as received (for the oracle)
	q      map[string]string // the same as strings
	upload string            // the uploaded file's temporary copy
}

type apiRoute struct {
	method string
	re     *regexp.Regexp
	// hand checks the parameters of a pve-manager method (not in the
	// oracle); nil means the oracle's PVE::API2 classes serve it.
	hand func(s *apiServer, c *apiCall) error
	// perm is the method's declared permission check, made before its
	// parameters are checked (as check_api2_permissions).
	perm   func(c *apiCall) error
	run    func(s *apiServer, c *apiCall) (any, error)
	noAuth bool
}

var apiRoutes []apiRoute

func init() {
	vms := func(c *apiCall) string { return "/vms/" + c.q["vmid"] }
	ct := `^/nodes/([^/]+)/lxc/([^/]+)`
	apiRoutes = []apiRoute{
		{method: "GET", re: regexp.MustCompile(`^/version$`), hand: handNoParams, run: (*apiServer).version},
		{method: "GET", re: regexp.MustCompile(`^/cluster/nextid$`), hand: handNextID, run: (*apiServer).nextID},
		{method: "GET", re: regexp.MustCompile(`^/cluster/resources$`), hand: handResources, run: (*apiServer).resources},
		{method: "GET", re: regexp.MustCompile(`^/nodes$`), hand: handNoParams, run: (*apiServer).nodes},
		{method: "GET", re: regexp.MustCompile(`^/nodes/([^/]+)/tasks/([^/]+)/(status|log)$`), hand: handTask, run: (*apiServer).task},
		{method: "POST", re: regexp.MustCompile(`^/access/ticket$`), run: (*apiServer).ticket, noAuth: true},
		{method: "GET", re: regexp.MustCompile(`^/nodes/([^/]+)/storage$`), run: (*apiServer).storageIndex},
		{method: "GET", re: regexp.MustCompile(`^/nodes/([^/]+)/storage/([^/]+)/content$`), run: (*apiServer).storageContent,
			perm: func(c *apiCall) error {
				return c.p.checkAny("/storage/"+c.q["storage"], "Datastore.Audit", "Datastore.AllocateSpace")
			}},
		{method: "POST", re: regexp.MustCompile(`^/nodes/([^/]+)/storage/([^/]+)/upload$`), run: (*apiServer).uploadTemplate,
			perm: func(c *apiCall) error { return c.p.check("/storage/"+c.q["storage"], "Datastore.AllocateTemplate") }},
		{method: "GET", re: regexp.MustCompile(`^/nodes/([^/]+)/lxc$`), run: (*apiServer).listCTs},
		{method: "POST", re: regexp.MustCompile(`^/nodes/([^/]+)/lxc$`), run: (*apiServer).createCT},
		{method: "GET", re: regexp.MustCompile(ct + `/config$`), run: (*apiServer).ctConfig,
			perm: func(c *apiCall) error { return c.p.check(vms(c), "VM.Audit") }},
		{method: "PUT", re: regexp.MustCompile(ct + `/config$`), run: (*apiServer).updateCT,
			perm: func(c *apiCall) error {
				return c.p.checkAny(vms(c), "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options")
			}},
		{method: "GET", re: regexp.MustCompile(ct + `/status/current$`), run: (*apiServer).ctStatus,
			perm: func(c *apiCall) error { return c.p.check(vms(c), "VM.Audit") }},
		{method: "POST", re: regexp.MustCompile(ct + `/status/(start|stop|shutdown)$`), run: (*apiServer).ctPower,
			perm: func(c *apiCall) error { return c.p.check(vms(c), "VM.PowerMgmt") }},
		{method: "POST", re: regexp.MustCompile(ct + `/move_volume$`), run: (*apiServer).moveVolume,
			perm: func(c *apiCall) error { return c.p.check(vms(c), "VM.Config.Disk") }},
		{method: "DELETE", re: regexp.MustCompile(ct + `$`), run: (*apiServer).destroyCT,
			perm: func(c *apiCall) error { return c.p.check(vms(c), "VM.Allocate") }},
	}
}

// pathParams names a route's submatches as PVE's path templates do.
func pathParams(path string, m []string) map[string]string {
	out := map[string]string{}
	switch {
	case strings.HasPrefix(path, "/nodes/") && len(m) > 1:
		out["node"] = m[1]
		switch {
		case strings.Contains(path, "/lxc/") && len(m) > 2:
			out["vmid"] = m[2]
		case strings.Contains(path, "/storage/") && len(m) > 2:
			out["storage"] = m[2]
		case strings.Contains(path, "/tasks/") && len(m) > 2:
			out["upid"] = m[2]
		}
	}
	return out
}

// apiLogEntry is one line of the request log.
type apiLogEntry struct {
	Time    string            `json:"time"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Params  map[string]string `json:"params"`
	Auth    string            `json:"auth,omitempty"`
	Status  int               `json:"status"`
	Error   string            `json:"error,omitempty"`
	Errors  map[string]string `json:"errors,omitempty"`
	Check   string            `json:"check"` // pve (the oracle), hand, none (no oracle), or "" (refused before)
	Handler string            `json:"handler,omitempty"`
}

// secretParams never reach the log.
var secretParams = map[string]bool{"password": true, "new-password": true}

func (s *apiServer) logLine(v any) {
	b, _ := json.Marshal(v)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	s.log.Write(append(b, '\n'))
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	entry := apiLogEntry{Time: time.Now().UTC().Format(time.RFC3339Nano), Method: r.Method, Path: r.URL.Path}
	data, extra, ae := s.serve(r, &entry)
	entry.Status = http.StatusOK
	if ae != nil {
		entry.Status, entry.Error, entry.Errors = ae.code, ae.msg, ae.errors
	}
	s.logLine(entry)
	respond(w, r, data, extra, ae)
}

func (s *apiServer) serve(r *http.Request, entry *apiLogEntry) (any, map[string]any, *apiError) {
	path, ok := strings.CutPrefix(r.URL.Path, "/api2/json")
	if !ok {
		return nil, nil, &apiError{code: http.StatusNotImplemented, msg: "Unknown API format"}
	}
	path = "/" + strings.Trim(path, "/")
	entry.Path = path
	c := &apiCall{r: r}
	var route *apiRoute
	for i := range apiRoutes {
		if rt := &apiRoutes[i]; rt.method == r.Method {
			if m := rt.re.FindStringSubmatch(path); m != nil {
				route, c.m = rt, m
				break
			}
		}
	}
	if route == nil {
		return nil, nil, &apiError{code: http.StatusNotImplemented, msg: fmt.Sprintf("Method '%s %s' not implemented", r.Method, path)}
	}
	if !route.noAuth {
		p, ae := s.authenticate(r)
		if ae != nil {
			return nil, nil, ae
		}
		c.p = p
		entry.Auth = p.id()
	}
	if err := s.readParams(c); err != nil {
		return nil, nil, toAPIError(err)
	}
	defer func() {
		if c.upload != "" {
			os.Remove(c.upload)
		}
	}()
	entry.Params = map[string]string{}
	for k, v := range c.q {
		if secretParams[k] {
			v = "<secret>"
		}
		entry.Params[k] = v
	}
	for k, v := range pathParams(path, c.m) {
		c.q[k] = v
	}
	if route.perm != nil {
		if err := route.perm(c); err != nil {
			return nil, nil, toAPIError(err)
		}
	}
	switch {
	case route.hand != nil:
		entry.Check = "hand"
		if err := route.hand(s, c); err != nil {
			return nil, nil, toAPIError(err)
		}
	case s.oracle != nil:
		v, err := s.oracle.Validate(r.Method, path, c.raw)
		if err != nil {
			return nil, nil, toAPIError(fmt.Errorf("the PVE oracle failed: %v", err))
		}
		if !v.Known {
			return nil, nil, toAPIError(fmt.Errorf("the PVE oracle has no method for %s %s", r.Method, path))
		}
		entry.Check, entry.Handler = "pve", v.Handler
		if !v.OK {
			if len(v.Errors) == 0 {
				return nil, nil, &apiError{code: http.StatusBadRequest, msg: v.Message}
			}
			return nil, nil, paramErr(v.Errors)
		}
	default:
		entry.Check = "none"
	}
	// The stand-in's own check of a path's VMID, as pct's (with the
	// oracle, PVE's schema has refused a bad one already).
	if v, ok := pathParams(path, c.m)["vmid"]; ok {
		pe := newParamError("")
		parseVMID(pe, v, s.h.Version)
		if err := pe.orNil(); err != nil {
			return nil, nil, toAPIError(err)
		}
	}
	data, err := route.run(s, c)
	if err != nil {
		return nil, nil, toAPIError(err)
	}
	if lt, ok := data.(taskLog); ok {
		return lt.lines, map[string]any{"total": lt.total}, nil
	}
	return data, nil, nil
}

// readParams collects the query string and the body's parameters
// (form, multipart with the uploaded file, or JSON), as pveproxy does:
// a key given several times has its values joined with NUL.
func (s *apiServer) readParams(c *apiCall) error {
	r := c.r
	c.raw = map[string]any{}
	add := func(k, v string) {
		if old, ok := c.raw[k].(string); ok {
			v = old + "\x00" + v
		}
		c.raw[k] = v
	}
	for k, vs := range r.URL.Query() {
		for _, v := range vs {
			add(k, v)
		}
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case r.Method == http.MethodGet || r.Body == nil:
	case ct == "application/json":
		dec := json.NewDecoder(io.LimitReader(r.Body, 16<<20))
		dec.UseNumber()
		var body map[string]any
		if err := dec.Decode(&body); err != nil && err != io.EOF {
			return &apiError{code: http.StatusBadRequest, msg: "unable to parse JSON body: " + err.Error()}
		}
		for k, v := range body {
			c.raw[k] = v
		}
	case ct == "multipart/form-data":
		mr, err := r.MultipartReader()
		if err != nil {
			return &apiError{code: http.StatusBadRequest, msg: err.Error()}
		}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return &apiError{code: http.StatusBadRequest, msg: "multipart: " + err.Error()}
			}
			if part.FileName() == "" {
				b, err := io.ReadAll(io.LimitReader(part, 1<<20))
				if err != nil {
					return err
				}
				add(part.FormName(), string(b))
				continue
			}
			if c.upload != "" {
				return &apiError{code: http.StatusBadRequest, msg: "more than one file in the upload"}
			}
			// pveproxy takes the file part's filename= as the filename
			// parameter (file_upload_multipart), whatever a field said.
			c.raw["filename"] = part.FileName()
			// pveproxy streams the file to /var/tmp/pveupload-<hex>.
			var rnd [8]byte
			rand.Read(rnd[:])
			c.upload = s.h.path("var/tmp", "pveupload-"+hex.EncodeToString(rnd[:]))
			f, err := os.OpenFile(c.upload, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, part)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("upload: %v", err)
			}
		}
	default:
		if err := r.ParseForm(); err != nil {
			return &apiError{code: http.StatusBadRequest, msg: err.Error()}
		}
		for k, vs := range r.PostForm {
			for _, v := range vs {
				add(k, v)
			}
		}
	}
	c.q = map[string]string{}
	for k, v := range c.raw {
		c.q[k] = paramString(v)
	}
	return nil
}

func paramString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "1"
		}
		return "0"
	case nil:
		return ""
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// argv turns request parameters into the options of the stand-in's CLI
// parser, so the API runs the same checks and code as pct and pvesh.
func (c *apiCall) argv(skip ...string) []string {
	keys := make([]string, 0, len(c.q))
	for k := range c.q {
		if !slices.Contains(skip, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, "--"+k+"="+c.q[k])
	}
	return out
}

// ---- hand-checked parameters (pve-manager methods) ----

func handAllowed(c *apiCall, allowed ...string) map[string]string {
	errs := map[string]string{}
	for k := range c.raw {
		if !slices.Contains(allowed, k) {
			errs[k] = notInSchema
		}
	}
	return errs
}

func handNoParams(s *apiServer, c *apiCall) error {
	if errs := handAllowed(c); len(errs) > 0 {
		return paramErr(errs)
	}
	return nil
}

func handNextID(s *apiServer, c *apiCall) error {
	errs := handAllowed(c, "vmid")
	if v, ok := c.q["vmid"]; ok {
		pe := newParamError("")
		check(pe, "vmid", v, vmidParam, s.h.Version)
		for k, m := range pe.errs {
			errs[k] = m
		}
	}
	if len(errs) > 0 {
		return paramErr(errs)
	}
	return nil
}

func handResources(s *apiServer, c *apiCall) error {
	errs := handAllowed(c, "type")
	if v, ok := c.q["type"]; ok && !slices.Contains([]string{"vm", "storage", "node", "sdn", "pool"}, v) {
		errs["type"] = "value '" + v + "' does not have a value in the enumeration 'vm, storage, node, sdn, pool'"
	}
	if len(errs) > 0 {
		return paramErr(errs)
	}
	return nil
}

func handTask(s *apiServer, c *apiCall) error {
	allowed := []string{"node", "upid"}
	if c.m[3] == "log" {
		allowed = append(allowed, "start", "limit", "download")
	}
	errs := handAllowed(c, allowed...)
	if !upidRE.MatchString(c.q["upid"]) {
		errs["upid"] = "unable to parse worker upid '" + c.q["upid"] + "'"
	}
	for _, k := range []string{"start", "limit"} {
		if v, ok := c.q[k]; ok {
			if n, err := strconv.Atoi(v); err != nil || n < 0 {
				errs[k] = "type check ('integer') failed - got '" + v + "'"
			}
		}
	}
	if len(errs) > 0 {
		return paramErr(errs)
	}
	return nil
}

// ---- methods ----

func (s *apiServer) version(c *apiCall) (any, error) {
	v := s.h.Version
	return obj{{"version", v.raw}, {"release", fmt.Sprintf("%d.%d", v.major, v.minor)}, {"repoid", "5d7f8ddc"}}, nil
}

// nextID answers with a string, as pve-manager does (the JSON has
// "data":"100").
func (s *apiServer) nextID(c *apiCall) (any, error) {
	id, err := s.h.nextID(c.q["vmid"])
	if err != nil {
		return nil, err
	}
	return fmt.Sprint(id), nil
}

// resources lists only what the caller may see, as PVE filters it.
func (s *apiServer) resources(c *apiCall) (any, error) {
	all, err := s.h.resources(c.q["type"])
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, row := range all.([]any) {
		o := row.(obj)
		get := func(k string) any {
			for _, p := range o {
				if p.k == k {
					return p.v
				}
			}
			return nil
		}
		switch get("type") {
		case "lxc", "qemu":
			if !c.p.allowed(fmt.Sprintf("/vms/%v", get("vmid")), "VM.Audit") {
				continue
			}
		case "storage":
			if c.p.checkAny(fmt.Sprintf("/storage/%v", get("storage")), "Datastore.Audit", "Datastore.AllocateSpace") != nil {
				continue
			}
		}
		out = append(out, o)
	}
	return out, nil
}

func (s *apiServer) nodes(c *apiCall) (any, error) {
	ns, err := s.h.nodes()
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, n := range ns {
		out = append(out, obj{{"node", n}, {"status", "online"}, {"type", "node"}, {"id", "node/" + n}})
	}
	return out, nil
}

// taskLog is a task log answer: the lines and their total count.
type taskLog struct {
	lines []any
	total int
}

func (s *apiServer) task(c *apiCall) (any, error) {
	s.mu.Lock()
	t := s.tasks[c.q["upid"]]
	s.mu.Unlock()
	if t == nil || t.node != c.q["node"] {
		return nil, fmt.Errorf("no such task")
	}
	if t.user != c.p.id() && t.user != c.p.user+"!"+c.p.token && !strings.HasPrefix(t.user, c.p.user+"!") {
		if err := c.p.check("/nodes/"+t.node, "Sys.Audit"); err != nil {
			return nil, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	running := t.done.IsZero() || time.Since(t.done) < s.delay
	if c.m[3] == "status" {
		o := obj{{"upid", t.upid}, {"node", t.node}, {"pid", t.pid}, {"pstart", t.pstart}, {"starttime", t.start.Unix()},
			{"type", t.typ}, {"id", t.id}, {"user", t.user}}
		if running {
			return append(o, kv{"status", "running"}), nil
		}
		return append(o, kv{"status", "stopped"}, kv{"exitstatus", t.exit}), nil
	}
	lines := t.lines
	if running && len(lines) > 0 {
		lines = lines[:len(lines)-1] // the verdict comes at the end
	}
	start, limit := 0, 50
	if v, ok := c.q["start"]; ok {
		start, _ = strconv.Atoi(v)
	}
	if v, ok := c.q["limit"]; ok {
		limit, _ = strconv.Atoi(v)
	}
	out := []any{}
	for i := start; i < len(lines) && i < start+limit; i++ {
		out = append(out, obj{{"n", i + 1}, {"t", lines[i]}})
	}
	return taskLog{lines: out, total: len(lines)}, nil
}

// ticket is POST /access/ticket with a user's password.
func (s *apiServer) ticket(c *apiCall) (any, error) {
	cfg, err := s.authConfig()
	if err != nil {
		return nil, err
	}
	user := c.q["username"]
	if realm := c.q["realm"]; realm != "" && !strings.Contains(user, "@") {
		user += "@" + realm
	}
	u, ok := cfg.Users[user]
	if !ok || u.Password == "" || u.Password != c.q["password"] {
		return nil, &apiError{code: http.StatusUnauthorized, msg: "authentication failure"}
	}
	var rnd [24]byte
	rand.Read(rnd[:])
	ticket := fmt.Sprintf("PVE:%s:%08X::%s", user, time.Now().Unix(), hex.EncodeToString(rnd[:]))
	s.mu.Lock()
	s.tickets[ticket] = user
	s.mu.Unlock()
	return obj{{"username", user}, {"ticket", ticket}, {"CSRFPreventionToken", csrfToken(ticket)}, {"cap", obj{}}}, nil
}

// node checks the node of the path: a request for a node the cluster
// does not have cannot be proxied anywhere.
func (s *apiServer) node(c *apiCall) (string, error) {
	n := c.q["node"]
	if !s.h.nodeExists(n) {
		return "", fmt.Errorf("no such cluster node '%s'", n)
	}
	return n, nil
}

// on is the Host as seen from another node (pct works on h.Node).
func (s *apiServer) on(node string) *Host {
	h := *s.h
	h.Node = node
	return &h
}

func (s *apiServer) storageIndex(c *apiCall) (any, error) {
	node, err := s.node(c)
	if err != nil {
		return nil, err
	}
	all, err := s.h.storages()
	if err != nil {
		return nil, err
	}
	want := splitList(c.q["content"])
	out := []any{}
	for _, st := range all {
		if id := c.q["storage"]; id != "" && st.ID != id {
			continue
		}
		if !st.availableOn(node) || (c.q["enabled"] == "1" && st.Disabled) {
			continue
		}
		if len(want) > 0 && !anyContent(st, want) {
			continue
		}
		if c.p.checkAny("/storage/"+st.ID, "Datastore.Audit", "Datastore.AllocateSpace") != nil {
			continue
		}
		total, used, avail := s.h.usage(st)
		active, enabled := 1, 1
		if st.Disabled {
			active, enabled, total, used, avail = 0, 0, 0, 0, 0
		}
		frac := 0.0
		if total > 0 {
			frac = float64(used) / float64(total)
		}
		shared := 0
		if st.Shared {
			shared = 1
		}
		out = append(out, obj{{"storage", st.ID}, {"type", st.Type}, {"content", strings.Join(st.Content, ",")},
			{"shared", shared}, {"active", active}, {"enabled", enabled},
			{"total", total}, {"used", used}, {"avail", avail}, {"used_fraction", frac}})
	}
	return out, nil
}

func (s *apiServer) storageContent(c *apiCall) (any, error) {
	node, err := s.node(c)
	if err != nil {
		return nil, err
	}
	st, err := s.h.storage(c.q["storage"])
	if err != nil {
		return nil, err
	}
	if err := st.checkEnabled(node); err != nil {
		return nil, err
	}
	want := splitList(c.q["content"])
	out := []any{}
	for _, v := range s.h.listVolumes(st) {
		if len(want) > 0 && !slices.Contains(want, v.content) {
			continue
		}
		if id := c.q["vmid"]; id != "" && fmt.Sprint(v.vmid) != id {
			continue
		}
		o := obj{{"volid", v.volid}, {"format", v.format}, {"content", v.content}, {"size", v.size}}
		if p, err := s.h.volume(v.volid); err == nil {
			if fi, err := os.Stat(p.Path); err == nil {
				o = append(o, kv{"ctime", fi.ModTime().Unix()})
			}
		}
		if v.vmid != 0 {
			o = append(o, kv{"vmid", v.vmid})
		}
		out = append(out, o)
	}
	return out, nil
}

// normalizeFilename is PVE::Storage::normalize_content_filename.
func normalizeFilename(name string) string {
	name = strings.TrimSuffix(name, "\n")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	return regexp.MustCompile(`[^a-zA-Z0-9_.-]`).ReplaceAllString(name, "_")
}

// uploadTemplate is pve-storage's upload (PVE::API2::Storage::Status):
// checks before the worker, then the worker verifies the checksum and
// puts the file in place. The stand-in renames it in atomically, so a
// failed upload never leaves part of a template behind.
func (s *apiServer) uploadTemplate(c *apiCall) (any, error) {
	node, err := s.node(c)
	if err != nil {
		return nil, err
	}
	sid := c.q["storage"]
	st, err := s.h.storage(sid)
	if err != nil {
		return nil, err
	}
	if err := st.checkEnabled(node); err != nil {
		return nil, err
	}
	if !st.fileBased() {
		return nil, fmt.Errorf("can't upload to storage type '%s'", st.Type)
	}
	if c.upload == "" {
		return nil, errors.New("missing temporary file name")
	}
	fi, err := os.Stat(c.upload)
	if err != nil {
		return nil, fmt.Errorf("temporary file '%s' does not exist", c.upload)
	}
	content := c.q["content"]
	filename := normalizeFilename(c.q["filename"])
	var dir string
	switch content {
	case "vztmpl":
		re := templateExtRE
		if s.h.Version.appContainers() {
			re = templateExtRE91
		}
		// m![^/]+$VZTMPL_EXT_RE_1$!: a name before the suffix.
		if loc := re.FindStringIndex(filename); loc == nil || loc[0] == 0 {
			return nil, paramErr(map[string]string{"filename": "wrong file extension"})
		}
		dir = filepath.Join(st.Path, "template/cache")
	case "iso":
		if !isoRE.MatchString(filename) {
			return nil, paramErr(map[string]string{"filename": "wrong file extension"})
		}
		dir = filepath.Join(st.Path, "template/iso")
	default:
		return nil, paramErr(map[string]string{"content": "upload content type '" + content + "' not allowed"})
	}
	if !st.hasContent(content) {
		return nil, fmt.Errorf("storage '%s' does not support '%s' content", sid, content)
	}
	tmpfile := c.upload
	dest := filepath.Join(dir, filename)
	return s.runTask(c, node, "imgcopy", "", func(out io.Writer) error {
		fmt.Fprintf(out, "starting file import from: %s\n", tmpfile)
		if algo := c.q["checksum-algorithm"]; algo != "" {
			fmt.Fprint(out, "calculating checksum...")
			got, err := fileHash(algo, tmpfile)
			if err != nil {
				return err
			}
			if !strings.EqualFold(got, c.q["checksum"]) {
				fmt.Fprintln(out)
				return fmt.Errorf("checksum mismatch: got '%s' != expect '%s'", got, c.q["checksum"])
			}
			fmt.Fprintln(out, "OK, checksum verified")
		}
		fmt.Fprintf(out, "target node: %s\ntarget file: %s\nfile size is: %d\n", node, dest, fi.Size())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("import failed: %v", err)
		}
		tmp := filepath.Join(dir, "."+filename+".tmp."+strconv.Itoa(os.Getpid()))
		if err := copyFile(tmpfile, tmp); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("import failed: %v", err)
		}
		if err := os.Rename(tmp, dest); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("import failed: %v", err)
		}
		fmt.Fprintln(out, "finished file import successfully")
		return nil
	})
}

func fileHash(algo, path string) (string, error) {
	var hsh interface {
		io.Writer
		Sum([]byte) []byte
	}
	switch algo {
	case "sha256":
		hsh = sha256.New()
	case "sha1":
		hsh = sha1.New()
	default:
		return "", fmt.Errorf("the PVE stand-in does not compute %s checksums", algo)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.Copy(hsh, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(hsh.Sum(nil)), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (s *apiServer) listCTs(c *apiCall) (any, error) {
	node, err := s.node(c)
	if err != nil {
		return nil, err
	}
	all, err := s.h.nodeCT(node, "", "")
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, row := range all.([]any) {
		if c.p.allowed(fmt.Sprintf("/vms/%v", row.(obj)[0].v), "VM.Audit") {
			out = append(out, row)
		}
	}
	return out, nil
}

// configPerm is PVE::LXC::check_ct_modify_config_perm: the privilege each
// option needs.
func configPerm(p *principal, vmid string, opts map[string]string, deletes []string, unprivileged bool, defaultStorage string) error {
	if p.user == "root@pam" && p.token == "" {
		return nil
	}
	vms := "/vms/" + vmid
	checkOne := func(k string, deleting bool) error {
		switch {
		case k == "cores" || k == "cpuunits" || k == "cpulimit":
			return p.check(vms, "VM.Config.CPU")
		case k == "rootfs" || isIndexed(k, "mp"):
			if err := p.check(vms, "VM.Config.Disk"); err != nil || deleting {
				return err
			}
			vol := parseMP(opts[k]).Volume
			if sizeRE.MatchString(vol) {
				vol = defaultStorage + ":" + vol
			}
			if t := mpType(vol); t != "volume" {
				return permError("mount point type " + t + " is only allowed for root@pam")
			}
			if nv := newVolumeRE.FindStringSubmatch(vol); nv != nil {
				return p.check("/storage/"+nv[1], "Datastore.AllocateSpace")
			}
			sid, _, _ := parseVolumeID(vol)
			if p.allowed("/storage/"+sid, "Datastore.Allocate") {
				return nil
			}
			if err := p.check("/storage/"+sid, "Datastore.Audit"); err != nil {
				return err
			}
			return p.check(vms, "VM.Config.Disk")
		case k == "memory" || k == "swap":
			return p.check(vms, "VM.Config.Memory")
		case isIndexed(k, "net") || k == "nameserver" || k == "searchdomain" || k == "hostname":
			return p.check(vms, "VM.Config.Network")
		case isIndexed(k, "dev"):
			return permError("configuring device passthrough is only allowed for root@pam")
		case k == "features":
			if !unprivileged {
				return permError("changing feature flags for privileged container is only allowed for root@pam")
			}
			val := opts[k]
			if val != "" && strings.Trim(regexp.MustCompile(`(^|,)nesting=[^,]*`).ReplaceAllString(val, ""), ",") != "" {
				return permError("changing feature flags (except nesting) is only allowed for root@pam")
			}
			return p.check(vms, "VM.Allocate")
		case k == "hookscript":
			return permError("changing the hookscript is only allowed for root@pam")
		default:
			return p.check(vms, "VM.Config.Options")
		}
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := checkOne(k, false); err != nil {
			return err
		}
	}
	for _, k := range deletes {
		if err := checkOne(k, true); err != nil {
			return err
		}
	}
	return nil
}

// createCT is create_vm: pvesh create's parameters and checks, the
// privileges create_vm checks in its code, the worker as a task.
func (s *apiServer) createCT(c *apiCall) (any, error) {
	node, err := s.node(c)
	if err != nil {
		return nil, err
	}
	sc := createSchema()
	sc.fixed["vmid"] = vmidParam
	sc.fixed["ostemplate"] = &param{typ: tString, maxLength: 255}
	errs := newParamError("")
	a, err := parseCLI(c.argv("node"), sc, s.h.Version, errs)
	if err != nil {
		return nil, err
	}
	for _, req := range []string{"ostemplate", "vmid"} {
		if !a.has(req) {
			errs.add(req, "property is missing and it is not optional")
		}
	}
	if err := errs.orNil(); err != nil {
		return nil, err
	}
	vmid, _ := strconv.Atoi(strings.TrimPrefix(a.opts["vmid"], "+"))
	vmidS := strconv.Itoa(vmid)
	p := c.p
	unprivileged := a.opts["unprivileged"] != "0"
	if !unprivileged {
		if err := p.check("/", "Sys.Modify"); err != nil {
			return nil, err
		}
	}
	if err := s.h.checkVMIDUnused(vmid); err != nil {
		return nil, err
	}
	if err := p.check("/vms/"+vmidS, "VM.Allocate"); err != nil {
		return nil, err
	}
	tmpl := a.opts["ostemplate"]
	if strings.HasPrefix(tmpl, "/") {
		if p.user != "root@pam" || p.token != "" {
			return nil, permError("Only root can pass arbitrary filesystem paths.")
		}
	} else if sid, _, err := parseVolumeID(tmpl); err == nil && !p.allowed("/storage/"+sid, "Datastore.Allocate") {
		if err := p.checkAny("/storage/"+sid, "Datastore.AllocateSpace", "Datastore.Audit"); err != nil {
			return nil, err
		}
	}
	storage := a.opts["storage"]
	if storage == "" {
		storage = "local"
	}
	conf := map[string]string{}
	for k, v := range a.opts {
		if !notConfigKeys[k] {
			conf[k] = v
		}
	}
	if err := configPerm(p, vmidS, conf, nil, unprivileged, storage); err != nil {
		return nil, err
	}
	if _, ok := conf["rootfs"]; !ok {
		if err := p.check("/storage/"+storage, "Datastore.AllocateSpace"); err != nil {
			return nil, err
		}
	}
	// start=1 starts the CT in the worker: its failure is the task's.
	start := a.opts["start"] == "1"
	delete(a.opts, "start")
	t := s.newTask(node, "vzcreate", vmidS, p.id())
	err = s.h.createCT(&createReq{
		node: node, vmid: vmid, ostemplate: tmpl, opts: a.opts,
		sshKeys: a.opts["ssh-public-keys"], password: a.opts["password"], out: t, warn: t,
	})
	// Errors before the worker are the request's; the worker's end the task.
	if err != nil && !strings.HasPrefix(err.Error(), fmt.Sprintf("unable to create CT %d - ", vmid)) {
		s.dropTask(t)
		return nil, err
	}
	if err == nil && start {
		err = s.h.startCT(node, vmid, false)
	}
	t.finish(err)
	return t.upid, nil
}

func (s *apiServer) ctConfig(c *apiCall) (any, error) {
	node, err := s.node(c)
	if err != nil {
		return nil, err
	}
	res, err := s.h.nodeCT(node, c.q["vmid"], "/config")
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(s.h.configPath(node, atoiOr0(c.q["vmid"])))
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(raw)
	return append(res.(obj), kv{"digest", hex.EncodeToString(sum[:])}), nil
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// ct is the CT of a request's path: its node, the Host as seen from
// there, its VMID and its config, which must exist on that node.
func (s *apiServer) ct(c *apiCall) (node string, on *Host, vmid int, conf *ctConf, err error) {
	if node, err = s.node(c); err != nil {
		return "", nil, 0, nil, err
	}
	on = s.on(node)
	vmid = atoiOr0(c.q["vmid"])
	conf, err = on.loadConfig(vmid)
	return node, on, vmid, conf, err
}

// updateCT is update_vm: synchronous, answers null.
func (s *apiServer) updateCT(c *apiCall) (any, error) {
	_, on, _, conf, err := s.ct(c)
	if err != nil {
		return nil, err
	}
	opts := map[string]string{}
	for k, v := range c.q {
		if k != "node" && k != "vmid" && k != "delete" && k != "revert" && k != "digest" {
			opts[k] = v
		}
	}
	if err := configPerm(c.p, c.q["vmid"], opts, splitList(c.q["delete"]), conf.keys["unprivileged"] == "1", "local"); err != nil {
		return nil, err
	}
	if err := on.setCT(append([]string{c.q["vmid"]}, c.argv("node", "vmid")...), ""); err != nil {
		return nil, err
	}
	return nil, nil
}

func (s *apiServer) ctStatus(c *apiCall) (any, error) {
	node, err := s.node(c)
	if err != nil {
		return nil, err
	}
	return s.h.nodeCT(node, c.q["vmid"], "/status/current")
}

// ctPower is vm_start, vm_stop and vm_shutdown: the checks PVE makes
// before the worker fail the request, the rest the task.
func (s *apiServer) ctPower(c *apiCall) (any, error) {
	node, on, vmid, _, err := s.ct(c)
	if err != nil {
		return nil, err
	}
	action := c.m[3]
	running := on.running(vmid)
	switch action {
	case "start":
		// The lock (startLock) is checked in the worker, as vm_start
		// does: a locked CT's start is a failed task, not a refused
		// request.
		if running {
			return nil, fmt.Errorf("CT %d already running", vmid)
		}
		return s.runTask(c, node, "vzstart", c.q["vmid"], func(io.Writer) error { return on.startCT(node, vmid, c.q["skiplock"] == "1") })
	default:
		if !running {
			return nil, fmt.Errorf("CT %d not running", vmid)
		}
		timeout := -1
		if action == "shutdown" {
			timeout = 60
			if v, ok := c.q["timeout"]; ok {
				timeout = atoiOr0(v)
			}
		}
		return s.runTask(c, node, "vz"+action, c.q["vmid"], func(io.Writer) error {
			return on.stopCT(vmid, c.q["skiplock"] == "1", timeout)
		})
	}
}

// moveVolume is move_volume: to a storage (the old volume kept as
// unusedN unless delete) or, with target-vmid, reassigned to another CT as
// target-volume; the parameter errors and permissions PVE checks before
// its worker fail the request, the move itself the task (worker
// "move_volume", id VMID or "VMID-KEY>TARGET-TKEY" as PVE names it).
func (s *apiServer) moveVolume(c *apiCall) (any, error) {
	node, on, vmid, _, err := s.ct(c)
	if err != nil {
		return nil, err
	}
	key, storage, target := c.q["volume"], c.q["storage"], c.q["target-vmid"]
	switch {
	case storage != "" && target != "":
		pe := newParamError("")
		pe.add("storage", "either set 'storage' or 'target-vmid', but not both")
		pe.add("target-vmid", "either set 'storage' or 'target-vmid', but not both")
		return nil, pe
	case target != "":
		tv := atoiOr0(target)
		if err := c.p.check("/vms/"+target, "VM.Config.Disk"); err != nil {
			return nil, err
		}
		tkey := c.q["target-volume"]
		if tkey == "" {
			tkey = key
		}
		return s.runTask(c, node, "move_volume", fmt.Sprintf("%d-%s>%d-%s", vmid, key, tv, tkey), func(io.Writer) error {
			return on.reassignVolume(vmid, key, tv, tkey)
		})
	case storage != "":
		if err := c.p.check("/storage/"+storage, "Datastore.AllocateSpace"); err != nil {
			return nil, err
		}
		return s.runTask(c, node, "move_volume", c.q["vmid"], func(io.Writer) error {
			return on.moveToStorage(vmid, key, storage, c.q["delete"] == "1")
		})
	}
	pe := newParamError("")
	pe.add("storage", "both 'storage' and 'target-vmid' missing, either needs to be set")
	pe.add("target-vmid", "both 'storage' and 'target-vmid' missing, either needs to be set")
	return nil, pe
}

// destroyCT is destroy_vm; purge has nothing more to remove here (no
// backup jobs, replication or HA in the stand-in).
func (s *apiServer) destroyCT(c *apiCall) (any, error) {
	node, on, vmid, conf, err := s.ct(c)
	if err != nil {
		return nil, err
	}
	if conf.keys["protection"] == "1" {
		return nil, fmt.Errorf("can't remove CT %d - protection mode enabled", vmid)
	}
	if c.q["force"] != "1" && on.running(vmid) {
		return nil, fmt.Errorf("CT %d is running - destroy failed", vmid)
	}
	return s.runTask(c, node, "vzdestroy", c.q["vmid"], func(io.Writer) error {
		return on.destroyCT(vmid, c.q["force"] == "1", c.q["destroy-unreferenced-disks"] == "1")
	})
}
