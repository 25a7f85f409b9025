package pveapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTokenHeaderAndVersion(t *testing.T) {
	f := newFake(t)
	f.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "PVEAPIToken="+testToken {
			t.Errorf("Authorization = %q", got)
		}
		if r.Header.Get("Cookie") != "" || r.Header.Get("CSRFPreventionToken") != "" {
			t.Errorf("token auth sent a ticket cookie or CSRF token: %v", r.Header)
		}
		reply(w, 200, "", map[string]string{"version": "9.1.2", "release": "9.1", "repoid": "abc"}, nil)
	})
	_, c := f.serve(t)
	v, err := c.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	maj, min, ok := v.MajorMinor()
	if v.Version != "9.1.2" || maj != 9 || min != 1 || !ok {
		t.Fatalf("Version = %+v, MajorMinor %d.%d %v", v, maj, min, ok)
	}
}

func TestTicketLoginAndCSRF(t *testing.T) {
	f := newFake(t)
	f.handle("GET /nodes", data([]map[string]string{{"node": "pve1", "status": "online"}, {"node": "pve2", "status": "offline"}}))
	f.handle("POST /nodes/pve1/lxc", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
			t.Errorf("Content-Type = %q", ct)
		}
		if r.PostForm.Get("vmid") != "123" || r.PostForm.Get("unprivileged") != "1" || r.PostForm.Get("ostemplate") != "local:vztmpl/a.tar.zst" {
			t.Errorf("form = %v", r.PostForm)
		}
		reply(w, 200, "", "UPID:pve1:0000AAAA:0000BBBB:65F0A1B2:vzcreate:123:root@pam:", nil)
	})
	ts := newTLS(f)
	defer ts.Close()
	c := newClient(t, Config{URL: ts.URL, User: "root@pam", Password: testPassword, Fingerprint: Fingerprint(ts.Certificate())})
	ctx := context.Background()
	nodes, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[1].Node != "pve2" || nodes[1].Status != "offline" {
		t.Fatalf("Nodes = %+v", nodes)
	}
	// fakePVE refuses a POST without the CSRF token that came with the
	// ticket: this passing proves it is sent.
	upid, err := c.CreateLXC(ctx, "pve1", url.Values{"vmid": {"123"}, "ostemplate": {"local:vztmpl/a.tar.zst"}, "unprivileged": {FormBool(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(upid, ":vzcreate:123:") {
		t.Fatalf("UPID = %q", upid)
	}
	if f.loginCount() != 1 {
		t.Fatalf("logged in %d times for two requests, want once", f.loginCount())
	}

	// A ticket past its first hour is renewed before it expires (PVE's
	// last two hours).
	c.cred().ticketAt = time.Now().Add(-ticketLife - time.Minute)
	if _, err := c.Nodes(ctx); err != nil {
		t.Fatal(err)
	}
	if f.loginCount() != 2 {
		t.Fatalf("an hour-old ticket was not renewed: %d logins", f.loginCount())
	}
	// A ticket PVE stops accepting is dropped, and the next call logs in
	// again.
	c.cred().ticket = "PVE:root@pam:65F0A1B2::revoked"
	if _, err := c.Nodes(ctx); !errors.Is(err, Unauthorized) {
		t.Fatalf("revoked ticket: %v", err)
	}
	if _, err := c.Nodes(ctx); err != nil || f.loginCount() != 3 {
		t.Fatalf("after a refused ticket: %v, %d logins", err, f.loginCount())
	}

	bad := newClient(t, Config{URL: ts.URL, User: "root@pam", Password: "wrong", Fingerprint: Fingerprint(ts.Certificate())})
	_, err = bad.Nodes(ctx)
	var e *Error
	if !errors.As(err, &e) || e.Kind != Unauthorized || !strings.Contains(err.Error(), "password") || e.Path != "/access/ticket" {
		t.Fatalf("wrong password: %v (%#v)", err, e)
	}
}

func TestFingerprintPin(t *testing.T) {
	f := newFake(t)
	f.handle("GET /version", data(map[string]string{"version": "8.2.4", "release": "8.2"}))
	ts := newTLS(f)
	defer ts.Close()
	seen := Fingerprint(ts.Certificate())
	ctx := context.Background()

	for _, pin := range []string{seen, strings.ToLower(strings.ReplaceAll(seen, ":", ""))} {
		c := newClient(t, Config{URL: ts.URL, Token: testToken, Fingerprint: pin})
		if _, err := c.Version(ctx); err != nil {
			t.Fatalf("pin %s: %v", pin, err)
		}
	}

	wrong := strings.Repeat("AB:", 31) + "AB"
	c := newClient(t, Config{URL: ts.URL, Token: testToken, Fingerprint: wrong})
	_, err := c.Version(ctx)
	var e *Error
	if !errors.As(err, &e) || e.Kind != TLS || e.Fingerprint != seen || !strings.Contains(err.Error(), seen) || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("wrong pin: %v", err)
	}
	if f.count("GET /version") != 2 {
		t.Fatalf("the server saw %d requests, want 2: a wrong pin must stop before the request is sent", f.count("GET /version"))
	}

	// Without a pin the system CAs decide, and they do not know the
	// test server's certificate: the refusal names what it presented.
	c = newClient(t, Config{URL: ts.URL, Token: testToken})
	_, err = c.Version(ctx)
	if !errors.As(err, &e) || e.Kind != TLS || e.Fingerprint != seen || !strings.Contains(err.Error(), seen) {
		t.Fatalf("untrusted certificate: %v", err)
	}

	// https to a plain http server.
	plain := httptest.NewServer(f)
	defer plain.Close()
	c = newClient(t, Config{URL: strings.Replace(plain.URL, "http:", "https:", 1), Token: testToken, Fingerprint: seen})
	if _, err := c.Version(ctx); !errors.Is(err, TLS) || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Fatalf("https to plain http: %v", err)
	}

	if _, err := New(Config{URL: ts.URL, Token: testToken, Fingerprint: "AB:CD"}); !errors.Is(err, BadConfig) {
		t.Fatalf("short fingerprint: %v", err)
	}
}

func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	for _, u := range []string{"http://pve.example.com:8006", "http://10.0.0.5:8006", "http://[2001:db8::1]:8006", "http://localhost.example.com"} {
		_, err := New(Config{URL: u, Token: testToken})
		var e *Error
		if !errors.As(err, &e) || e.Kind != BadConfig || !strings.Contains(e.Msg, "unencrypted") {
			t.Errorf("New(%s) = %v, want a refusal of plain http", u, err)
		}
	}
	for _, u := range []string{"http://localhost:8006", "http://[::1]:8006", "http://127.0.0.2"} {
		if _, err := New(Config{URL: u, Token: testToken}); err != nil {
			t.Errorf("New(%s): %v", u, err)
		}
	}
	for _, u := range []string{"", "pve:8006", "ftp://pve", "https://user:pw@pve:8006", "https://pve:8006/?x=1"} {
		if _, err := New(Config{URL: u, Token: testToken}); !errors.Is(err, BadConfig) {
			t.Errorf("New(%q) = %v, want BadConfig", u, err)
		}
	}

	f := newFake(t)
	f.handle("GET /version", data(map[string]string{"version": "8.2.4", "release": "8.2"}))
	ts := httptest.NewServer(f)
	defer ts.Close()
	c := newClient(t, Config{URL: ts.URL + "/", Token: testToken})
	if v, err := c.Version(context.Background()); err != nil || v.Release != "8.2" {
		t.Fatalf("http on loopback: %+v %v", v, err)
	}
}

// TestURLPrefixAndPort: a URL with a path (a reverse proxy's prefix) keeps
// it, one with /api2/json is not doubled, and one without a port gets 8006.
func TestURLPrefixAndPort(t *testing.T) {
	for in, want := range map[string]string{
		"https://pve":                          "https://pve:8006",
		"https://pve:443/proxmox/":             "https://pve:443/proxmox",
		"https://pve:8006/api2/json":           "https://pve:8006",
		"https://[2001:db8::1]/pve/api2/json/": "https://[2001:db8::1]:8006/pve",
	} {
		c, err := New(Config{URL: in, Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.base.String(); got != want {
			t.Errorf("%s: base %s, want %s", in, got, want)
		}
	}
	f := newFake(t)
	ts := httptest.NewServer(http.StripPrefix("/proxy", f))
	defer ts.Close()
	f.handle("GET /cluster/nextid", data("104"))
	c := newClient(t, Config{URL: ts.URL + "/proxy", Token: testToken})
	if id, err := c.NextID(context.Background()); err != nil || id != 104 {
		t.Fatalf("NextID behind a prefix = %d, %v", id, err)
	}
}

func TestErrorMapping(t *testing.T) {
	f := newFake(t)
	f.handle("POST /nodes/pve/storage/local/upload", fail(403, "Permission check failed (/storage/local, Datastore.AllocateTemplate)", nil))
	f.handle("POST /nodes/pve/lxc", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		switch r.PostForm.Get("vmid") {
		case "100":
			reply(w, 500, "CT 100 already exists on node 'pve'", nil, nil)
		case "101":
			reply(w, 400, "Parameter verification failed.", nil, map[string]string{
				"hostname": "invalid format - value does not look like a valid DNS name",
				"memory":   "value must have a minimum value of 16",
			})
		case "102":
			reply(w, 403, "Permission check failed (/vms/102, VM.Allocate)", nil, nil)
		case "103":
			reply(w, 500, "storage 'nope' does not exist", nil, nil)
		case "104":
			reply(w, 596, "Connection timed out", nil, nil)
		case "106":
			reply(w, 403, "Permission check failed (/storage/local, Datastore.Audit|Datastore.AllocateSpace)", nil, nil)
		case "105":
			reply(w, 403, "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)", nil, nil)
		}
	})
	f.handle("GET /nodes/pve/lxc/200/config", func(w http.ResponseWriter, r *http.Request) {
		// Old pveproxy: the message only in the status line.
		conn, buf, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		buf.WriteString("HTTP/1.1 500 Configuration file 'nodes/pve/lxc/200.conf' does not exist\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		buf.Flush()
	})
	_, c := f.serve(t)
	ctx := context.Background()
	create := func(id string) error {
		_, err := c.CreateLXC(ctx, "pve", url.Values{"vmid": {id}})
		return err
	}
	cases := []struct {
		name   string
		err    error
		kind   Kind
		status int
		says   []string
		check  func(*Error) bool
	}{
		{"403 privilege", func() error {
			_, err := c.UploadTemplate(ctx, "pve", "local", writeFile(t, "a.tar.zst", "x"), "")
			return err
		}(), Forbidden, 403,
			[]string{"Datastore.AllocateTemplate", "/storage/local", "upload a.tar.zst"},
			func(e *Error) bool {
				return e.Privilege == "Datastore.AllocateTemplate" && e.ACLPath == "/storage/local"
			}},
		{"500 exists", create("100"), AlreadyExists, 500, []string{"CT 100 already exists on node 'pve'", "create CT 100"}, nil},
		{"400 params", create("101"), BadParam, 400, []string{"hostname: invalid format", "memory: value must have a minimum value of 16"},
			func(e *Error) bool { return len(e.Params) == 2 && e.Params["memory"] != "" }},
		{"403 VM.Allocate", create("102"), Forbidden, 403, []string{"VM.Allocate on /vms/102"},
			func(e *Error) bool { return e.Privilege == "VM.Allocate" && e.ACLPath == "/vms/102" }},
		{"500 missing storage", create("103"), NotFound, 500, []string{"storage 'nope' does not exist"}, nil},
		{"596 node unreachable", create("104"), Connection, 596, []string{"Connection timed out"}, nil},
		{"403 any of", create("106"), Forbidden, 403, []string{"Datastore.Audit, Datastore.AllocateSpace (one is enough) on /storage/local", "Datastore.Audit or Datastore.AllocateSpace"},
			func(e *Error) bool {
				return e.Privilege == "Datastore.Audit|Datastore.AllocateSpace" && e.ACLPath == "/storage/local"
			}},
		{"403 condition", create("105"), Forbidden, 403, []string{"only allowed for root@pam"}, func(e *Error) bool { return e.Privilege == "" }},
		{"status line only", func() error { _, err := c.LXCConfig(ctx, "pve", 200); return err }(), NotFound, 500, []string{"200.conf' does not exist"}, nil},
		{"501 no such call", func() error { _, err := c.Start(ctx, "pve", 300); return err }(), Failed, 501, []string{"not implemented"}, nil},
	}
	for _, tc := range cases {
		var e *Error
		if !errors.As(tc.err, &e) {
			t.Errorf("%s: %v is not an *Error", tc.name, tc.err)
			continue
		}
		if e.Kind != tc.kind || e.Status != tc.status || !errors.Is(tc.err, tc.kind) {
			t.Errorf("%s: kind %v status %d, want %v %d (%v)", tc.name, e.Kind, e.Status, tc.kind, tc.status, tc.err)
		}
		for _, s := range tc.says {
			if !strings.Contains(tc.err.Error(), s) {
				t.Errorf("%s: %q does not say %q", tc.name, tc.err, s)
			}
		}
		if e.Fix == "" || strings.Contains(e.Error(), "--") {
			t.Errorf("%s: %q has no fix, or names a flag", tc.name, tc.err)
		}
		if tc.check != nil && !tc.check(e) {
			t.Errorf("%s: fields %#v", tc.name, *e)
		}
	}

	// A token PVE does not know.
	ts := newTLS(f)
	defer ts.Close()
	bad := newClient(t, Config{URL: ts.URL, Token: "root@pam!ci=other", Fingerprint: Fingerprint(ts.Certificate())})
	_, err := bad.Nodes(ctx)
	if !errors.Is(err, Unauthorized) || !strings.Contains(err.Error(), "invalid token value") || !strings.Contains(err.Error(), "API token") {
		t.Fatalf("bad token: %v", err)
	}
}

func TestGetRetriedPostNot(t *testing.T) {
	f := newFake(t)
	n := 0
	f.handle("GET /nodes", func(w http.ResponseWriter, r *http.Request) {
		if n++; n <= 2 {
			reply(w, 503, "Service Unavailable", nil, nil)
			return
		}
		reply(w, 200, "", []map[string]string{{"node": "pve"}}, nil)
	})
	f.handle("GET /cluster/nextid", fail(503, "Service Unavailable", nil))
	f.handle("POST /nodes/pve/lxc", fail(503, "Service Unavailable", nil))
	f.handle("DELETE /nodes/pve/lxc/100", fail(502, "Bad Gateway", nil))
	f.handle("GET /nodes/pve/storage", fail(500, "storage 'x' does not exist", nil))
	_, c := f.serve(t)
	ctx := context.Background()
	if nodes, err := c.Nodes(ctx); err != nil || len(nodes) != 1 {
		t.Fatalf("Nodes after two 503s: %v %v", nodes, err)
	}
	if got := f.count("GET /nodes"); got != 3 {
		t.Fatalf("GET /nodes sent %d times, want 3", got)
	}
	if _, err := c.NextID(ctx); !errors.Is(err, Failed) {
		t.Fatalf("NextID on 503s: %v", err)
	}
	if got := f.count("GET /cluster/nextid"); got != 1+getRetries {
		t.Fatalf("GET /cluster/nextid sent %d times, want %d (bounded)", got, 1+getRetries)
	}
	if _, err := c.CreateLXC(ctx, "pve", url.Values{"vmid": {"100"}}); err == nil {
		t.Fatal("create on 503 succeeded")
	}
	if _, err := c.Destroy(ctx, "pve", 100, true); err == nil {
		t.Fatal("destroy on 502 succeeded")
	}
	if got, got2 := f.count("POST /nodes/pve/lxc"), f.count("DELETE /nodes/pve/lxc/100"); got != 1 || got2 != 1 {
		t.Fatalf("POST sent %d times, DELETE %d times: a write is never retried", got, got2)
	}
	if _, err := c.NodeStorages(ctx, "pve", ""); !errors.Is(err, NotFound) {
		t.Fatalf("NodeStorages: %v", err)
	}
}

func TestConnectionRefusedAndTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, Config{URL: "http://" + addr, Token: testToken})
	start := time.Now()
	_, err = c.Version(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Kind != Connection || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %s", time.Since(start))
	}

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	c = newClient(t, Config{URL: slow.URL, Token: testToken, Timeout: 100 * time.Millisecond})
	if _, err := c.CreateLXC(context.Background(), "pve", url.Values{"vmid": {"100"}}); !errors.Is(err, Timeout) || !strings.Contains(err.Error(), "in time") {
		t.Fatalf("slow server: %v", err)
	}
}

func TestHostileAnswers(t *testing.T) {
	f := newFake(t)
	f.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		bw := bufio.NewWriter(w)
		bw.WriteString(`{"data":"`)
		for i := 0; i < MaxResponse/1024+1; i++ {
			bw.WriteString(strings.Repeat("a", 1024))
		}
		bw.WriteString(`"}`)
		bw.Flush()
	})
	f.handle("GET /nodes", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "<html>login</html>") })
	f.handle("GET /cluster/nextid", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example/steal", http.StatusFound)
	})
	f.handle("GET /cluster/resources", data(map[string]string{"not": "a list"}))
	f.handle("POST /nodes/pve/lxc/100/status/start", data("not a upid"))
	f.handle("GET /nodes/..%2Faccess/storage", data([]map[string]string{{"storage": "escaped"}}))
	_, c := f.serve(t)
	ctx := context.Background()
	for name, err := range map[string]error{
		"too large": func() error { _, err := c.Version(ctx); return err }(),
		"not JSON":  func() error { _, err := c.Nodes(ctx); return err }(),
		"redirect":  func() error { _, err := c.NextID(ctx); return err }(),
		"wrong shape": func() error {
			_, err := c.ClusterResources(ctx, "vm")
			return err
		}(),
		"no UPID": func() error { _, err := c.Start(ctx, "pve", 100); return err }(),
	} {
		if !errors.Is(err, Protocol) {
			t.Errorf("%s: %v, want a Protocol error", name, err)
		}
	}
	// A node name cannot climb to another API path.
	st, err := c.NodeStorages(ctx, "../access", "")
	if err != nil || len(st) != 1 || st[0].Storage != "escaped" {
		t.Fatalf("escaped node name: %v %v", st, err)
	}
}

func TestLXCCalls(t *testing.T) {
	f := newFake(t)
	f.handle("GET /nodes/pve/lxc/100/config", func(w http.ResponseWriter, r *http.Request) {
		// Without current=1 PVE answers the pending values: a rootfs
		// written to a running CT would read as changed.
		if r.URL.Query().Get("current") != "1" {
			t.Errorf("GET config query %q, want current=1", r.URL.RawQuery)
		}
		reply(w, 200, "", map[string]any{"hostname": "web", "memory": 512, "unprivileged": 1, "digest": "abc"}, nil)
	})
	f.handle("PUT /nodes/pve/lxc/100/config", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if r.PostForm.Get("mp0") != "local-lvm:8,mp=/data" || r.PostForm.Get("delete") != "swap" {
			t.Errorf("PUT form %v", r.PostForm)
		}
		reply(w, 200, "", nil, nil)
	})
	f.handle("DELETE /nodes/pve/lxc/100", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("purge") != "1" || r.ContentLength > 0 {
			t.Errorf("DELETE query %q, body %d bytes: PVE takes DELETE's parameters in the query", r.URL.RawQuery, r.ContentLength)
		}
		reply(w, 200, "", "UPID:pve:1:2:3:vzdestroy:100:root@pam!ci:", nil)
	})
	f.handle("POST /nodes/pve/lxc/100/status/stop", data("UPID:pve:1:2:3:vzstop:100:root@pam!ci:"))
	f.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("type") != "vm" {
			t.Errorf("type = %q", r.URL.Query().Get("type"))
		}
		reply(w, 200, "", []map[string]any{{"id": "lxc/100", "type": "lxc", "vmid": 100, "node": "pve", "status": "running", "template": 0}}, nil)
	})
	f.handle("GET /nodes/pve/storage/local/content", data([]map[string]any{{"volid": "local:vztmpl/a.tar.zst", "size": 1234, "content": "vztmpl", "format": "tzst"}}))
	f.handle("GET /nodes/pve/storage", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("content") != "rootdir" {
			t.Errorf("content = %q", r.URL.Query().Get("content"))
		}
		reply(w, 200, "", []map[string]any{{"storage": "local-lvm", "content": "rootdir,images", "active": 1, "enabled": 1, "shared": 0, "avail": 1e9}}, nil)
	})
	_, c := f.serve(t)
	ctx := context.Background()
	conf, err := c.LXCConfig(ctx, "pve", 100)
	if err != nil || conf["hostname"] != "web" || conf["memory"] != "512" {
		t.Fatalf("LXCConfig = %v %v", conf, err)
	}
	if err := c.SetLXCConfig(ctx, "pve", 100, url.Values{"mp0": {"local-lvm:8,mp=/data"}, "delete": {"swap"}}); err != nil {
		t.Fatal(err)
	}
	if upid, err := c.Stop(ctx, "pve", 100); err != nil || !strings.Contains(upid, "vzstop") {
		t.Fatalf("Stop = %q %v", upid, err)
	}
	if upid, err := c.Destroy(ctx, "pve", 100, true); err != nil || !strings.Contains(upid, "vzdestroy") {
		t.Fatalf("Destroy = %q %v", upid, err)
	}
	res, err := c.ClusterResources(ctx, "vm")
	if err != nil || len(res) != 1 || res[0].VMID != 100 || res[0].Template {
		t.Fatalf("ClusterResources = %+v %v", res, err)
	}
	vols, err := c.StorageContent(ctx, "pve", "local", "vztmpl")
	if err != nil || len(vols) != 1 || vols[0].Size != 1234 {
		t.Fatalf("StorageContent = %+v %v", vols, err)
	}
	st, err := c.NodeStorages(ctx, "pve", "rootdir")
	if err != nil || len(st) != 1 || !st[0].Holds("rootdir") || st[0].Holds("vztmpl") || !bool(st[0].Active) || st[0].Avail != 1e9 {
		t.Fatalf("NodeStorages = %+v %v", st, err)
	}
}

// TestInList: a value is one of a list's whole values, spaces around it
// aside, never a part of one.
func TestInList(t *testing.T) {
	for _, c := range []struct {
		list, item string
		want       bool
	}{
		{"vztmpl,rootdir", "rootdir", true},
		{"vztmpl, rootdir ", "rootdir", true},
		{"vztmpl,rootdirs", "rootdir", false},
		{"pve1,pve2", "pve", false},
		{"", "pve", false},
	} {
		if got := InList(c.list, c.item); got != c.want {
			t.Errorf("InList(%q, %q) = %v, want %v", c.list, c.item, got, c.want)
		}
	}
}

func TestTokenParsing(t *testing.T) {
	tok, err := ParseToken("PVEAPIToken=deploy@pve!ci-1=" + testSecret + "\n")
	if err != nil || tok.User != "deploy" || tok.Realm != "pve" || tok.ID != "ci-1" || tok.secret() != testSecret {
		t.Fatalf("ParseToken = %v %v", tok, err)
	}
	for _, s := range []string{"", "root@pam", "root@pam!ci", "root!ci=x", "root@pam=x", "@pam!ci=x", "root@pam!=x", "ro ot@pam!ci=x", "root@pam!ci=a b"} {
		if _, err := ParseToken(s); !errors.Is(err, BadConfig) {
			t.Errorf("ParseToken(%q) = %v", s, err)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	os.WriteFile(p, []byte("  "+testToken+"  \nsecond line\n"), 0o600)
	if tok, err := ReadTokenFile(p); err != nil || tok != testToken {
		t.Fatalf("ReadTokenFile: %v", err)
	}
	os.WriteFile(p, []byte(strings.Repeat("x", 5000)), 0o600)
	if _, err := ReadTokenFile(p); !errors.Is(err, BadConfig) {
		t.Fatalf("huge token file: %v", err)
	}
	if _, err := ReadTokenFile(filepath.Join(dir, "none")); !errors.Is(err, BadConfig) {
		t.Fatalf("missing token file: %v", err)
	}
	os.WriteFile(p, []byte(testPassword+"\n"), 0o600)
	if pw, err := ReadPasswordFile(p); err != nil || pw != testPassword {
		t.Fatalf("ReadPasswordFile = %q %v", pw, err)
	}
	t.Setenv("PVE_API_TOKEN", testToken)
	if tok, ok, err := TokenFromEnv(); !ok || err != nil || tok != testToken {
		t.Fatalf("TokenFromEnv: %v %v", ok, err)
	}
	t.Setenv("PVE_API_TOKEN", "")
	if _, ok, err := TokenFromEnv(); ok || err != nil {
		t.Fatalf("TokenFromEnv unset = %v %v", ok, err)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConnectionErrorRetry: a server that drops every connection gets a
// GET 1+getRetries times and a POST once.
func TestConnectionErrorRetry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepts := make(chan struct{}, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			accepts <- struct{}{}
			// Read the request, then hang up without an answer.
			conn.SetReadDeadline(time.Now().Add(time.Second))
			conn.Read(make([]byte, 4096))
			conn.Close()
		}
	}()
	defer func() { l.Close(); <-done }()
	c := newClient(t, Config{URL: "http://" + l.Addr().String(), Token: testToken})
	_, err = c.Version(context.Background())
	if !errors.Is(err, Connection) {
		t.Fatalf("GET to a server that hangs up: %v", err)
	}
	if n := len(accepts); n != 1+getRetries {
		t.Fatalf("GET connected %d times, want %d", n, 1+getRetries)
	}
	for len(accepts) > 0 {
		<-accepts
	}
	_, err = c.Start(context.Background(), "pve", 100)
	if !errors.Is(err, Connection) {
		t.Fatalf("POST to a server that hangs up: %v", err)
	}
	if n := len(accepts); n != 1 {
		t.Fatalf("POST connected %d times, want 1: a write is never retried", n)
	}
}

// TestOwnHTTPClient: a caller's client is used, and a pin still applies
// to it.
func TestOwnHTTPClient(t *testing.T) {
	f := newFake(t)
	f.handle("GET /version", data(map[string]string{"version": "8.2.4", "release": "8.2"}))
	ts := newTLS(f)
	defer ts.Close()
	used := false
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = func(r *http.Request) (*url.URL, error) { used = true; return nil, nil }
	c := newClient(t, Config{URL: ts.URL, Token: testToken, Fingerprint: Fingerprint(ts.Certificate()), HTTPClient: &http.Client{Transport: tr}})
	if _, err := c.Version(context.Background()); err != nil || !used {
		t.Fatalf("own client: %v (used %v)", err, used)
	}
	c = newClient(t, Config{URL: ts.URL, Token: testToken, Fingerprint: strings.Repeat("11", 32), HTTPClient: &http.Client{Transport: tr}})
	if _, err := c.Version(context.Background()); !errors.Is(err, TLS) {
		t.Fatalf("own client, wrong pin: %v", err)
	}
	if _, err := New(Config{URL: ts.URL, Token: testToken, Fingerprint: Fingerprint(ts.Certificate()), HTTPClient: &http.Client{Transport: roundTripFunc(nil)}}); !errors.Is(err, BadConfig) {
		t.Fatalf("pin on a foreign transport: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
