// Package pveapi is a client of the Proxmox VE HTTP API (port 8006): what a
// deploy needs (version, nodes, storages, upload of a template, containers
// and their tasks), authenticated with an API token or a user's ticket,
// over TLS checked by the system CAs or pinned to a node certificate's
// fingerprint. Failures are typed (*Error, *TaskError); the token secret,
// password and ticket never appear in an error or in a formatted Config or
// Client.
package pveapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nexcage/nexcage/progress"
)

// Limits on what is read from the server: a hostile or broken endpoint
// cannot make the client hold more than this.
const (
	// MaxResponse is the largest API answer read (a cluster's resources
	// list is far smaller).
	MaxResponse = 16 << 20
	// TaskLogLines is how many lines of a failed task's log are kept.
	TaskLogLines = 50
	// maxLogLine caps each log line kept.
	maxLogLine = 1024
	// getRetries is how many times a GET is retried on a 5xx answer or
	// connection error.
	getRetries = 3
)

// retryBackoff is the first wait before a retry; it doubles each time.
var retryBackoff = 200 * time.Millisecond

// Config says where the API is and how to log in.
type Config struct {
	// URL is https://HOST[:PORT][/PREFIX] (port 8006 when none is given);
	// http:// only to a loopback address.
	URL string
	// Token is an API token USER@REALM!TOKENID=SECRET (ReadTokenFile
	// and TokenFromEnv give one). Either Token or User and Password.
	Token string
	// User (USER@REALM) and Password get a ticket from /access/ticket.
	User, Password string
	// Fingerprint pins the server's leaf certificate by its SHA-256
	// fingerprint ("AA:BB:..." or plain hex, any case) instead of
	// checking it against the system CAs.
	Fingerprint string
	// Timeout bounds each request but uploads (default 60s); an upload
	// is bounded by its context.
	Timeout time.Duration
	// Progress receives upload bytes (default: nothing).
	Progress progress.Reporter
	// HTTPClient replaces the default client; with Fingerprint, its
	// Transport must be nil or an *http.Transport (cloned to pin).
	HTTPClient *http.Client
}

const redacted = "<redacted>"

// String describes the config without its secrets.
func (c Config) String() string {
	tok := ""
	if c.Token != "" {
		id, _, _ := strings.Cut(c.Token, "=")
		if _, err := ParseToken(c.Token); err != nil {
			id = "<malformed>"
		}
		tok = id + "=" + redacted
	}
	pw := ""
	if c.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("pveapi.Config{URL: %q, Token: %q, User: %q, Password: %q, Fingerprint: %q, Timeout: %s}",
		redactURL(c.URL), tok, c.User, pw, c.Fingerprint, c.Timeout)
}

// GoString is String: %#v must not print the secrets either.
func (c Config) GoString() string { return c.String() }

// Format prints String for every verb (%v, %+v, %#v, %s, %q, %x...).
func (c Config) Format(f fmt.State, verb rune) { io.WriteString(f, c.String()) }

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// Token is a parsed API token.
type Token struct {
	User, Realm, ID string
	// secret is a func for the same reason as Client.cr.
	secret func() string
}

// String is the token's name without its secret.
func (t Token) String() string                { return t.User + "@" + t.Realm + "!" + t.ID + "=" + redacted }
func (t Token) GoString() string              { return t.String() }
func (t Token) Format(f fmt.State, verb rune) { io.WriteString(f, t.String()) }

// ParseToken checks USER@REALM!TOKENID=SECRET. Its error never quotes the
// value, part of which is secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "PVEAPIToken=")
	name, secret, ok := strings.Cut(s, "=")
	user, rest, ok2 := strings.Cut(name, "@")
	realm, id, ok3 := strings.Cut(rest, "!")
	if !ok || !ok2 || !ok3 || user == "" || realm == "" || id == "" || secret == "" ||
		strings.ContainsAny(s, " \t\r\n") || !safeName(user+realm+id) {
		return Token{}, &Error{Kind: BadConfig, Msg: "the API token is not of the form USER@REALM!TOKENID=SECRET", Fix: "give the token as PVE showed it when it was made: user, realm, token ID and secret"}
	}
	return Token{User: user, Realm: realm, ID: id, secret: func() string { return secret }}, nil
}

func safeName(s string) bool {
	for _, r := range s {
		if r < 0x21 || r == 0x7f || strings.ContainsRune(`"';,=`, r) {
			return false
		}
	}
	return true
}

// ReadTokenFile reads an API token from the first line of a file (a token
// on the command line would be readable by every user in the process list)
// and checks its form; the result goes into Config.Token.
func ReadTokenFile(path string) (string, error) {
	line, err := readSecretFile(path, "API token")
	if err != nil {
		return "", err
	}
	if _, err := ParseToken(line); err != nil {
		return "", err
	}
	return strings.TrimPrefix(line, "PVEAPIToken="), nil
}

// TokenFromEnv reads $PVE_API_TOKEN and checks its form; ok is false when
// it is unset or empty.
func TokenFromEnv() (token string, ok bool, err error) {
	v := strings.TrimSpace(os.Getenv("PVE_API_TOKEN"))
	if v == "" {
		return "", false, nil
	}
	if _, err := ParseToken(v); err != nil {
		return "", true, err
	}
	return strings.TrimPrefix(v, "PVEAPIToken="), true, nil
}

// ReadPasswordFile reads a password from the first line of a file.
func ReadPasswordFile(path string) (string, error) {
	return readSecretFile(path, "password")
}

func readSecretFile(path, what string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &Error{Kind: BadConfig, Msg: fmt.Sprintf("cannot read the %s file: %v", what, err), Fix: "give a file holding the " + what + " on its first line"}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return "", &Error{Kind: BadConfig, Msg: fmt.Sprintf("cannot read the %s file %s: %v", what, path, err), Fix: "give a file holding the " + what + " on its first line"}
	}
	if len(b) > 4096 {
		return "", &Error{Kind: BadConfig, Msg: fmt.Sprintf("the %s file %s is larger than 4 KiB", what, path), Fix: "give a file holding only the " + what + " on its first line"}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if what == "API token" {
		line = strings.TrimSpace(line)
	}
	if line == "" {
		return "", &Error{Kind: BadConfig, Msg: fmt.Sprintf("the %s file %s is empty", what, path), Fix: "write the " + what + " on its first line"}
	}
	return line, nil
}

// Client talks to one PVE API endpoint. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	hc       *http.Client
	timeout  time.Duration
	progress progress.Reporter
	// The credentials are behind a function: fmt prints a func as an
	// address and cannot reach into it, so no verb on a Client, or on a
	// struct holding one, prints a secret.
	cr func() *cred
}

func (c *Client) cred() *cred { return c.cr() }

type cred struct {
	token    *Token
	user     string
	password string
	// secrets are scrubbed from every error text.
	secrets []string

	mu       sync.Mutex
	ticket   string
	csrf     string
	ticketAt time.Time
}

// String describes the client without its credentials.
func (c Client) String() string {
	if c.cr == nil || c.base == nil {
		return "pveapi.Client{}"
	}
	auth := "ticket for " + c.cred().user
	if c.cred().token != nil {
		auth = "token " + c.cred().token.String()
	}
	return fmt.Sprintf("pveapi.Client{URL: %q, auth: %s}", c.base.Redacted(), auth)
}

// GoString and Format print String: no verb shows the credentials.
func (c Client) GoString() string              { return c.String() }
func (c Client) Format(f fmt.State, verb rune) { io.WriteString(f, c.String()) }

// New checks cfg and returns a client; it sends nothing yet.
func New(cfg Config) (*Client, error) {
	cr := &cred{}
	c := &Client{timeout: cfg.Timeout, progress: cfg.Progress, cr: func() *cred { return cr }}
	if c.timeout <= 0 {
		c.timeout = 60 * time.Second
	}
	if c.progress == nil {
		c.progress = progress.Discard
	}
	switch {
	case cfg.Token != "":
		if cfg.Password != "" {
			return nil, &Error{Kind: BadConfig, Msg: "both an API token and a password are given", Fix: "give only one of them"}
		}
		tok, err := ParseToken(cfg.Token)
		if err != nil {
			return nil, err
		}
		c.cred().token = &tok
		c.cred().secrets = append(c.cred().secrets, tok.secret())
	case cfg.User != "" && cfg.Password != "":
		if !strings.Contains(cfg.User, "@") || !safeName(cfg.User) {
			return nil, &Error{Kind: BadConfig, Msg: fmt.Sprintf("user %q is not of the form USER@REALM", cfg.User), Fix: "name the realm too, as in root@pam"}
		}
		c.cred().user, c.cred().password = cfg.User, cfg.Password
		c.cred().secrets = append(c.cred().secrets, cfg.Password)
	default:
		return nil, &Error{Kind: BadConfig, Msg: "no credentials for the PVE API", Fix: "give an API token, or a user and password"}
	}
	base, err := parseBase(cfg.URL)
	if err != nil {
		return nil, err
	}
	c.base = base
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.Fingerprint != "" {
		pin, err := parseFingerprint(cfg.Fingerprint)
		if err != nil {
			return nil, err
		}
		if base.Scheme != "https" {
			return nil, &Error{Kind: BadConfig, Msg: "a certificate fingerprint is given for a plain http:// URL", Fix: "use https://, or leave the fingerprint out"}
		}
		// The pin replaces the CA and host name checks: PVE's own
		// certificate is self-signed, and what was pinned is this very
		// certificate.
		tlsConf.InsecureSkipVerify = true
		tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &pinError{}
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(sum[:], pin) {
				return &pinError{seen: sum[:], want: pin}
			}
			return nil
		}
	}
	if cfg.HTTPClient != nil {
		hc := *cfg.HTTPClient
		if cfg.Fingerprint != "" {
			var tr *http.Transport
			switch t := hc.Transport.(type) {
			case nil:
				tr = http.DefaultTransport.(*http.Transport).Clone()
			case *http.Transport:
				tr = t.Clone()
			default:
				return nil, &Error{Kind: BadConfig, Msg: fmt.Sprintf("cannot pin a fingerprint on a %T", t), Fix: "give an HTTP client whose Transport is an *http.Transport"}
			}
			tr.TLSClientConfig = tlsConf
			hc.Transport = tr
		}
		c.hc = &hc
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsConf
		tr.Proxy = http.ProxyFromEnvironment
		tr.ResponseHeaderTimeout = c.timeout
		c.hc = &http.Client{Transport: tr}
	}
	// PVE does not redirect API calls; following one could carry the
	// credentials to another host.
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

func parseBase(raw string) (*url.URL, error) {
	bad := func(msg string) error {
		return &Error{Kind: BadConfig, Msg: msg, Fix: "give the API's address as https://HOST:8006"}
	}
	if raw == "" {
		return nil, bad("no PVE API URL is given")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, bad(fmt.Sprintf("%s is not a URL of the form https://HOST:8006", redactURL(raw)))
	}
	if u.User != nil {
		return nil, bad(fmt.Sprintf("the PVE API URL %s carries a user or password", u.Redacted()))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, bad(fmt.Sprintf("the PVE API URL %s has a query or fragment", u.Redacted()))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, &Error{Kind: BadConfig, Msg: fmt.Sprintf("plain http:// to %s would send the credentials unencrypted over the network", u.Hostname()),
				Fix: "use https:// (pinning the node certificate's fingerprint if it is self-signed); http:// is only for loopback addresses"}
		}
	default:
		return nil, bad(fmt.Sprintf("%s is not an http(s) URL", u.Redacted()))
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "8006")
	}
	p := strings.TrimSuffix(u.Path, "/")
	p = strings.TrimSuffix(p, "/api2/json")
	u.Path, u.RawPath = p, ""
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseFingerprint reads "AA:BB:..." or hex, any case.
func parseFingerprint(s string) ([]byte, error) {
	h := strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s))
	h = strings.TrimPrefix(strings.TrimPrefix(h, "sha256"), "SHA256")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, &Error{Kind: BadConfig, Msg: fmt.Sprintf("%q is not a SHA-256 fingerprint", clip(s, 120)), Fix: "give the 32 bytes in hex, as in AA:BB:...; `pvenode cert info` on the node shows it"}
	}
	return b, nil
}

// FormatFingerprint writes a SHA-256 sum as PVE shows it, "AA:BB:...".
func FormatFingerprint(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Fingerprint is the SHA-256 fingerprint of a certificate, "AA:BB:...".
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return FormatFingerprint(sum[:])
}

type pinError struct{ seen, want []byte }

func (e *pinError) Error() string {
	if e.seen == nil {
		return "the server presented no certificate"
	}
	return "certificate fingerprint " + FormatFingerprint(e.seen) + " is not the pinned " + FormatFingerprint(e.want)
}

// request is one API call.
type request struct {
	method, path string // path below /api2/json, its segments escaped
	what         string // in words, for errors
	form         url.Values
	// body and contentType/length replace form (uploads).
	body          func() (io.Reader, error)
	contentType   string
	contentLength int64
	noTimeout     bool
	noAuth        bool
}

// envelope is PVE's answer: {"data": ..., "errors": {...}, "message": "..."}.
type envelope struct {
	Data    json.RawMessage   `json:"data"`
	Errors  map[string]string `json:"errors"`
	Message string            `json:"message"`
	Total   *int              `json:"total"`
}

// do sends r, retrying a GET on 5xx and connection errors, and decodes
// the envelope's data into out (when non-nil).
func (c *Client) do(ctx context.Context, r request, out any) (*envelope, error) {
	wait := retryBackoff
	for attempt := 0; ; attempt++ {
		env, retry, err := c.once(ctx, r)
		if err == nil {
			if out != nil && len(env.Data) > 0 {
				if jerr := json.Unmarshal(env.Data, out); jerr != nil {
					return nil, c.scrub(&Error{Kind: Protocol, Method: r.method, Path: unescape(r.path),
						Msg: fmt.Sprintf("cannot %s: PVE's answer is not what its API documents (%v)", r.what, jerr),
						Fix: "check that the URL is a Proxmox VE API endpoint", Err: jerr}, r.secrets()...)
				}
			}
			return env, nil
		}
		if !retry || r.method != http.MethodGet || attempt >= getRetries {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// once sends r once; retry says whether a GET may be retried.
func (c *Client) once(ctx context.Context, r request) (*envelope, bool, error) {
	fail := func(e *Error) error {
		e.Method, e.Path = r.method, unescape(r.path)
		return c.scrub(e, r.secrets()...)
	}
	if !r.noAuth {
		if err := c.login(ctx); err != nil {
			return nil, false, err
		}
	}
	if !r.noTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	u := *c.base
	u.RawPath = c.base.EscapedPath() + "/api2/json" + r.path
	u.Path = c.base.Path + "/api2/json" + unescape(r.path)
	var body io.Reader
	ctype, length := "", int64(0)
	switch {
	case r.body != nil:
		b, err := r.body()
		if err != nil {
			return nil, false, err
		}
		body, ctype, length = b, r.contentType, r.contentLength
	case r.method == http.MethodPost || r.method == http.MethodPut:
		enc := r.form.Encode()
		body, ctype, length = strings.NewReader(enc), "application/x-www-form-urlencoded", int64(len(enc))
	default:
		u.RawQuery = r.form.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, false, fail(&Error{Kind: BadConfig, Msg: fmt.Sprintf("cannot %s: %v", r.what, err), Fix: "check the API URL"})
	}
	if body != nil {
		req.ContentLength = length
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if !r.noAuth {
		c.authorize(req)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		e := c.transportError(ctx, r, err)
		// A connection error is retried (for a GET); a timeout is not:
		// each retry would wait the whole Timeout again.
		return nil, e.Kind == Connection, fail(e)
	}
	defer resp.Body.Close()
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if rerr != nil {
		e := c.transportError(ctx, r, rerr)
		return nil, e.Kind == Connection, fail(e)
	}
	if len(data) > MaxResponse {
		return nil, false, fail(&Error{Kind: Protocol, Status: resp.StatusCode, Msg: fmt.Sprintf("cannot %s: the answer is larger than %d MiB", r.what, MaxResponse>>20), Fix: "check that the URL is a Proxmox VE API endpoint"})
	}
	var env envelope
	jsonErr := json.Unmarshal(data, &env)
	if resp.StatusCode/100 != 2 {
		if resp.StatusCode/100 == 3 {
			return nil, false, fail(&Error{Kind: Protocol, Status: resp.StatusCode, Msg: fmt.Sprintf("cannot %s: the server redirects to %s", r.what, redactURL(resp.Header.Get("Location"))), Fix: "give the API's own address (https://HOST:8006)"})
		}
		msg := env.Message
		if jsonErr != nil || msg == "" {
			// PVE puts its message in the status line too.
			msg = strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
		}
		var params map[string]string
		if jsonErr == nil {
			params = env.Errors
		}
		e := responseError(r.method, unescape(r.path), r.what, resp.StatusCode, msg, params, c.cred().token != nil)
		if e.Kind == Unauthorized && c.cred().token == nil {
			c.cred().mu.Lock()
			c.cred().ticket = "" // log in again next time
			c.cred().mu.Unlock()
		}
		return nil, resp.StatusCode >= 500 && resp.StatusCode != 501, c.scrub(e, r.secrets()...)
	}
	if jsonErr != nil {
		return nil, false, fail(&Error{Kind: Protocol, Status: resp.StatusCode, Msg: fmt.Sprintf("cannot %s: the answer is not JSON", r.what), Fix: "check that the URL is a Proxmox VE API endpoint", Err: jsonErr})
	}
	return &env, false, nil
}

func (c *Client) transportError(ctx context.Context, r request, err error) *Error {
	e := &Error{Err: err}
	host := c.base.Host
	var pe *pinError
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var ne net.Error
	switch {
	case errors.As(err, &pe):
		e.Kind = TLS
		if pe.seen == nil {
			e.Msg = fmt.Sprintf("cannot %s: %s presented no certificate", r.what, host)
			e.Fix = "check the address"
			break
		}
		e.Fingerprint = FormatFingerprint(pe.seen)
		e.Msg = fmt.Sprintf("cannot %s: %s presented a certificate with SHA-256 fingerprint %s, not the pinned %s", r.what, host, e.Fingerprint, FormatFingerprint(pe.want))
		e.Fix = "compare the fingerprint with `pvenode cert info` on the node: if they match, the certificate was renewed and the pin needs updating; if not, something else answers at this address"
	case errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie):
		e.Kind = TLS
		var cert *x509.Certificate
		switch {
		case cve != nil && len(cve.UnverifiedCertificates) > 0:
			cert = cve.UnverifiedCertificates[0]
		case uae.Cert != nil:
			cert = uae.Cert
		case hne.Certificate != nil:
			cert = hne.Certificate
		case cie.Cert != nil:
			cert = cie.Cert
		}
		why := "is not signed by a CA this system trusts"
		if hne.Certificate != nil {
			why = "is not made out to " + c.base.Hostname()
		} else if cie.Cert != nil {
			why = "is not valid (" + cie.Error() + ")"
		}
		e.Msg = fmt.Sprintf("cannot %s: the certificate of %s %s", r.what, host, why)
		if cert != nil {
			e.Fingerprint = Fingerprint(cert)
			e.Msg += " (its SHA-256 fingerprint is " + e.Fingerprint + ")"
		}
		e.Fix = "PVE ships a self-signed certificate: pin its fingerprint after comparing it with `pvenode cert info` on the node, or install a certificate from a trusted CA"
	case errors.As(err, new(tls.RecordHeaderError)) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		e.Kind = TLS
		e.Msg = fmt.Sprintf("cannot %s: %s does not speak TLS", r.what, host)
		e.Fix = "check the port (PVE's API listens with https on 8006)"
	case errors.As(err, new(tls.AlertError)):
		e.Kind = TLS
		e.Msg = fmt.Sprintf("cannot %s: %s refused the TLS handshake (%v)", r.what, host, innermost(err))
		e.Fix = "check the address and port"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Kind = Connection
		e.Msg = fmt.Sprintf("cannot %s: %s refused the connection", r.what, host)
		e.Fix = "check the address and port (PVE's API listens on 8006) and that pveproxy runs on the node"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		if ctx.Err() == context.Canceled {
			e.Kind = Failed
			e.Msg = fmt.Sprintf("cannot %s: canceled", r.what)
			break
		}
		e.Kind = Timeout
		e.Msg = fmt.Sprintf("cannot %s: %s did not answer in time", r.what, host)
		e.Fix = "check the network path to the node and its load; the request may still be carried out there"
	case errors.Is(err, context.Canceled):
		e.Kind = Failed
		e.Msg = fmt.Sprintf("cannot %s: canceled", r.what)
	default:
		var dnsErr *net.DNSError
		var opErr *net.OpError
		if errors.As(err, &dnsErr) || errors.As(err, &opErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			e.Kind = Connection
			e.Msg = fmt.Sprintf("cannot %s: cannot talk to %s (%v)", r.what, host, innermost(err))
			e.Fix = "check the address and the network path to the node"
			break
		}
		e.Kind = Failed
		e.Msg = fmt.Sprintf("cannot %s: %v", r.what, innermost(err))
	}
	return e
}

// innermost drops url.Error's "Get "https://...": " prefix.
func innermost(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// scrub removes the secrets from every text of e: a server (or a proxy)
// may echo what it was sent. extra are the request's own secrets (a
// container's root password).
func (c *Client) scrub(e *Error, extra ...string) *Error {
	secrets := c.secretTexts(extra...)
	clean := func(s string) string {
		for _, x := range secrets {
			s = strings.ReplaceAll(s, x, redacted)
		}
		return s
	}
	e.Msg, e.Fix = clean(e.Msg), clean(e.Fix)
	for k, v := range e.Params {
		e.Params[k] = clean(v)
	}
	if e.Err != nil {
		if t := e.Err.Error(); clean(t) != t {
			e.Err = errors.New(clean(t))
		}
	}
	return e
}

// secretTexts lists every secret the client holds, as sent and as
// escaped in a cookie or form.
func (c *Client) secretTexts(extra ...string) []string {
	cr := c.cred()
	list := append([]string{}, cr.secrets...)
	cr.mu.Lock()
	list = append(list, cr.ticket, cr.csrf)
	cr.mu.Unlock()
	list = append(list, extra...)
	var out []string
	for _, s := range list {
		if len(s) < 4 {
			// Too short to be told apart from ordinary text.
			continue
		}
		out = append(out, s, url.QueryEscape(s), url.PathEscape(s))
	}
	return out
}

func (r request) secrets() []string { return r.form["password"] }

func (c *Client) authorize(req *http.Request) {
	if c.cred().token != nil {
		req.Header.Set("Authorization", "PVEAPIToken="+c.cred().token.User+"@"+c.cred().token.Realm+"!"+c.cred().token.ID+"="+c.cred().token.secret())
		return
	}
	c.cred().mu.Lock()
	ticket, csrf := c.cred().ticket, c.cred().csrf
	c.cred().mu.Unlock()
	req.Header.Set("Cookie", "PVEAuthCookie="+url.QueryEscape(ticket))
	if req.Method != http.MethodGet {
		req.Header.Set("CSRFPreventionToken", csrf)
	}
}

// ticketLife is when a ticket is renewed: PVE's last two hours, and a
// renewal after one keeps a long deploy clear of the end.
const ticketLife = time.Hour

// login gets a ticket when the client has none, or an old one.
func (c *Client) login(ctx context.Context) error {
	if c.cred().token != nil {
		return nil
	}
	c.cred().mu.Lock()
	fresh := c.cred().ticket != "" && time.Since(c.cred().ticketAt) < ticketLife
	c.cred().mu.Unlock()
	if fresh {
		return nil
	}
	var data struct {
		Ticket string `json:"ticket"`
		CSRF   string `json:"CSRFPreventionToken"`
	}
	form := url.Values{"username": {c.cred().user}, "password": {c.cred().password}}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/access/ticket", what: "log in as " + c.cred().user, form: form, noAuth: true}, &data)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Kind == Unauthorized {
			e.Fix = "check the user (USER@REALM) and its password"
		}
		return err
	}
	if data.Ticket == "" || data.CSRF == "" {
		return c.scrub(&Error{Kind: Protocol, Method: http.MethodPost, Path: "/access/ticket", Msg: "cannot log in as " + c.cred().user + ": PVE's answer has no ticket", Fix: "check that the URL is a Proxmox VE API endpoint"})
	}
	if strings.Contains(data.Ticket, "!tfa!") {
		return &Error{Kind: Unauthorized, Method: http.MethodPost, Path: "/access/ticket", Msg: "cannot log in as " + c.cred().user + ": the user has two-factor authentication", Fix: "use an API token instead"}
	}
	c.cred().mu.Lock()
	c.cred().ticket, c.cred().csrf, c.cred().ticketAt = data.Ticket, data.CSRF, time.Now()
	c.cred().mu.Unlock()
	return nil
}

// path joins escaped segments: a node or storage name cannot reach
// another API path.
func path(segs ...string) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

func unescape(p string) string {
	if u, err := url.PathUnescape(p); err == nil {
		return u
	}
	return p
}
