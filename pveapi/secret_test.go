package pveapi

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// echo answers every request with an error quoting everything it was
// sent (headers, query, body): the worst a hostile or debugging proxy
// can do.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	all := fmt.Sprintf("%v %s %s", r.Header, r.URL.RawQuery, body)
	reply(w, 500, "echo "+all, nil, map[string]string{"param": all})
}

// TestSecretNeverShown runs every error path, with a token and with a
// password, against servers that echo what they were sent, and formats
// every Config, Client, Token and error with every verb: none of the
// output holds the token secret, the password or the ticket.
func TestSecretNeverShown(t *testing.T) {
	ctx := context.Background()
	var outputs []string
	record := func(what string, v any) {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			outputs = append(outputs, what+" "+verb+": "+fmt.Sprintf(verb, v))
		}
		if err, ok := v.(error); ok && err != nil {
			outputs = append(outputs, what+": "+err.Error())
			var e *Error
			if errors.As(err, &e) && e.Err != nil {
				outputs = append(outputs, what+" cause: "+e.Err.Error())
			}
			var te *TaskError
			if errors.As(err, &te) {
				outputs = append(outputs, strings.Join(te.Log, "\n"), te.ExitStatus)
			}
		}
	}

	f := newFake(t)
	f.noAuth = true
	taskUPID := "UPID:pve:1:2:3:vzcreate:100:root@pam!ci:"
	f.handle("GET /version", echo)
	f.handle("POST /nodes/pve/lxc", echo)
	f.handle("PUT /nodes/pve/lxc/100/config", echo)
	f.handle("DELETE /nodes/pve/lxc/100", echo)
	f.handle("POST /nodes/pve/storage/local/upload", echo)
	f.handle("GET /nodes/pve/storage", fail(403, "Permission check failed (/storage/local, Datastore.Audit)", nil))
	f.handle("GET /nodes", fail(401, "invalid token value!", nil))
	f.handle("GET "+path("nodes", "pve", "tasks", taskUPID, "status"), func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, "", map[string]any{"status": "stopped", "exitstatus": "failed: " + r.Header.Get("Authorization") + r.Header.Get("Cookie")}, nil)
	})
	f.handle("GET "+path("nodes", "pve", "tasks", taskUPID, "log"), func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, "", []map[string]any{{"n": 1, "t": "saw " + r.Header.Get("Authorization") + r.Header.Get("Cookie")}}, nil)
	})
	ts := newTLS(f)
	defer ts.Close()
	pin := Fingerprint(ts.Certificate())

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()
	tmpl := writeFile(t, "a.tar.zst", "template")

	configs := map[string]Config{
		"token":    {URL: ts.URL, Token: testToken, Fingerprint: pin, Timeout: 2 * time.Second},
		"password": {URL: ts.URL, User: "root@pam", Password: testPassword, Fingerprint: pin, Timeout: 2 * time.Second},
	}
	for name, cfg := range configs {
		record(name+" config", cfg)
		record(name+" config pointer", &cfg)
		c := newClient(t, cfg)
		record(name+" client", c)
		record(name+" client value", *c)
		// Unexported fields are printed by reflection, without their
		// String or Format: the secrets must be out of its reach too.
		tok, _ := ParseToken(testToken)
		record(name+" nested", struct {
			c   Client
			p   *Client
			tok Token
		}{*c, c, tok})
		calls := map[string]func() error{
			"version": func() error { _, err := c.Version(ctx); return err },
			"create": func() error {
				_, err := c.CreateLXC(ctx, "pve", url.Values{"vmid": {"100"}, "password": {testPassword}})
				return err
			},
			"set":     func() error { return c.SetLXCConfig(ctx, "pve", 100, url.Values{"description": {"x"}}) },
			"destroy": func() error { _, err := c.Destroy(ctx, "pve", 100, true); return err },
			"upload":  func() error { _, err := c.UploadTemplate(ctx, "pve", "local", tmpl, ""); return err },
			"403":     func() error { _, err := c.NodeStorages(ctx, "pve", ""); return err },
			"401":     func() error { _, err := c.Nodes(ctx); return err },
			"task":    func() error { _, err := c.WaitTask(ctx, "pve", taskUPID); return err },
			"404":     func() error { _, err := c.StorageContent(ctx, "pve", "local", ""); return err },
		}
		for what, call := range calls {
			err := call()
			if err == nil && name == "token" {
				t.Errorf("%s %s: no error", name, what)
			}
			record(name+" "+what, err)
		}
		// The same client against a wrong pin, an untrusted certificate,
		// a closed port and plain http to a remote host.
		for what, cfg2 := range map[string]Config{
			"wrong pin": {URL: ts.URL, Fingerprint: strings.Repeat("00", 32)},
			"no pin":    {URL: ts.URL},
			"refused":   {URL: "http://" + closed},
		} {
			cfg2.Token, cfg2.User, cfg2.Password = cfg.Token, cfg.User, cfg.Password
			c2 := newClient(t, cfg2)
			_, err := c2.Version(ctx)
			if err == nil {
				t.Errorf("%s %s: no error", name, what)
			}
			record(name+" "+what, err)
			record(name+" "+what+" client", c2)
		}
		bad := cfg
		bad.URL = "http://pve.example.com:8006"
		_, err := New(bad)
		record(name+" remote http", err)
	}
	// The password flow's login against a server that echoes it.
	f2 := newFake(t)
	f2.routes["POST /access/ticket"] = echo
	ts2 := newTLS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { echo(w, r) }))
	defer ts2.Close()
	c := newClient(t, Config{URL: ts2.URL, User: "root@pam", Password: testPassword, Fingerprint: Fingerprint(ts2.Certificate())})
	_, err := c.Version(ctx)
	if err == nil {
		t.Error("login against an echo server succeeded")
	}
	record("echoed login", err)

	// Malformed tokens and token files quote nothing of the value.
	for _, s := range []string{testSecret, "root@pam" + testSecret, "root@pam!ci " + testSecret, "root@pam!ci=" + testSecret + " x"} {
		_, err := New(Config{URL: ts.URL, Token: s})
		record("malformed token", err)
		record("malformed token config", Config{Token: s})
		_, err = ParseToken(s)
		record("ParseToken", err)
	}
	tok, _ := ParseToken(testToken)
	record("token", tok)
	record("token pointer", &tok)
	p := filepath.Join(t.TempDir(), "token")
	os.WriteFile(p, []byte("bad "+testSecret), 0o600)
	_, err = ReadTokenFile(p)
	record("token file", err)
	t.Setenv("PVE_API_TOKEN", testSecret)
	_, _, err = TokenFromEnv()
	record("env token", err)

	secrets := []string{testSecret, testPassword, testTicket, url.QueryEscape(testTicket), hex.EncodeToString([]byte(testSecret)), strings.ToUpper(hex.EncodeToString([]byte(testSecret)))}
	all := strings.Join(outputs, "\n")
	for _, s := range secrets {
		if i := strings.Index(all, s); i >= 0 {
			start := max(0, i-200)
			t.Errorf("a secret appears in the output: ...%s...", all[start:min(len(all), i+len(s)+50)])
		}
	}
	// The scrubbed texts still say something.
	for _, want := range []string{"<redacted>", "root@pam!ci", "Datastore.Audit", "refused", "fingerprint"} {
		if !strings.Contains(all, want) {
			t.Errorf("no output says %q", want)
		}
	}
	if len(outputs) < 200 {
		t.Errorf("only %d outputs checked", len(outputs))
	}
}
