package pvetest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
)

// apiClient makes raw requests to the stand-in API, as any PVE client
// would: form-encoded parameters, the token in the Authorization header.
type apiClient struct {
	t    *testing.T
	api  *pvetest.API
	hc   *http.Client
	auth string // Authorization header value
	// ticket auth instead of a token
	ticket, csrf string
}

type apiResp struct {
	Status int
	Reason string // the reason phrase: PVE's message
	Data   json.RawMessage
	Errors map[string]string
	Total  int
}

func (c *apiClient) do(method, path string, params url.Values) apiResp {
	c.t.Helper()
	u := c.api.URL + "/api2/json" + path
	var body io.Reader
	if method == "GET" || method == "DELETE" {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
	} else {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	c.authorize(req)
	return c.send(req)
}

func (c *apiClient) authorize(req *http.Request) {
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if c.ticket != "" {
		req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: url.QueryEscape(c.ticket)})
		if c.csrf != "" {
			req.Header.Set("CSRFPreventionToken", c.csrf)
		}
	}
}

func (c *apiClient) send(req *http.Request) apiResp {
	c.t.Helper()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	var env struct {
		Data   json.RawMessage   `json:"data"`
		Errors map[string]string `json:"errors"`
		Total  int               `json:"total"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		c.t.Fatalf("%s %s: not PVE's JSON envelope: %q", req.Method, req.URL.Path, b)
	}
	_, reason, _ := strings.Cut(resp.Status, " ")
	return apiResp{Status: resp.StatusCode, Reason: reason, Data: env.Data, Errors: env.Errors, Total: env.Total}
}

// upload posts a file as pve-storage's upload takes it (multipart).
func (c *apiClient) upload(node, storage, filename string, content []byte, checksum string) apiResp {
	c.t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("content", "vztmpl")
	mw.WriteField("filename", filename)
	if checksum != "" {
		mw.WriteField("checksum", checksum)
		mw.WriteField("checksum-algorithm", "sha256")
	}
	fw, err := mw.CreateFormFile("filename", filename)
	if err != nil {
		c.t.Fatal(err)
	}
	fw.Write(content)
	mw.Close()
	req, err := http.NewRequest("POST", fmt.Sprintf("%s/api2/json/nodes/%s/storage/%s/upload", c.api.URL, node, storage), &b)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	c.authorize(req)
	return c.send(req)
}

func (r apiResp) str(t *testing.T) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(r.Data, &s); err != nil {
		t.Fatalf("data %s is not a string", r.Data)
	}
	return s
}

func (r apiResp) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Data, &m); err != nil {
		t.Fatalf("data %s is not an object", r.Data)
	}
	return m
}

func (r apiResp) list(t *testing.T) []map[string]any {
	t.Helper()
	var l []map[string]any
	if err := json.Unmarshal(r.Data, &l); err != nil {
		t.Fatalf("data %s is not a list", r.Data)
	}
	return l
}

func wantOK(t *testing.T, what string, r apiResp) apiResp {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("%s: %d %s %v", what, r.Status, r.Reason, r.Errors)
	}
	return r
}

// wait polls a task until it stops, as clients do, and returns its exit
// status and whether it was seen running.
func (c *apiClient) wait(node, upid string) (exit string, sawRunning bool) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		st := wantOK(c.t, "task status", c.do("GET", "/nodes/"+node+"/tasks/"+url.PathEscape(upid)+"/status", nil)).obj(c.t)
		if st["status"] == "stopped" {
			return fmt.Sprint(st["exitstatus"]), sawRunning
		}
		if st["status"] != "running" {
			c.t.Fatalf("task status %v", st)
		}
		sawRunning = true
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("task %s did not stop", upid)
	return "", false
}

func (c *apiClient) taskLog(node, upid string) []string {
	c.t.Helper()
	r := wantOK(c.t, "task log", c.do("GET", "/nodes/"+node+"/tasks/"+url.PathEscape(upid)+"/log", url.Values{"limit": {"1000"}}))
	var lines []string
	for i, l := range r.list(c.t) {
		if n, _ := l["n"].(float64); int(n) != i+1 {
			c.t.Errorf("task log line %d numbered %v", i+1, l["n"])
		}
		lines = append(lines, fmt.Sprint(l["t"]))
	}
	if r.Total != len(lines) {
		c.t.Errorf("task log total %d, %d lines", r.Total, len(lines))
	}
	return lines
}

// TestAPIStandIn drives the stand-in API with raw HTTP requests, each of
// which Proxmox's own schema judges through the oracle: version, nextid,
// template upload with a right and a wrong checksum, a create that
// `pct` then sees, refusals for a bad token, a missing privilege and
// parameters PVE refuses, and the task model.
func TestAPIStandIn(t *testing.T) {
	pveoracle.Require(t)
	s := pvetest.NewStandIn(t)
	api := s.StartAPI(t, pvetest.APIOptions{TaskDelay: 300 * time.Millisecond})
	if note := api.OracleNote(t); !strings.HasPrefix(note, "on: ") {
		t.Fatalf("the server runs without the oracle: %q", note)
	}
	if !strings.HasPrefix(api.URL, "https://127.0.0.1:") || len(api.Fingerprint) != 95 {
		t.Fatalf("URL %q fingerprint %q", api.URL, api.Fingerprint)
	}
	full := api.AddToken(t, "ci@pve!full", map[string][]string{"/": {"*"}})
	c := &apiClient{t: t, api: api, hc: api.Client(), auth: full}

	// Template bytes, uploaded below rather than put in place.
	tplPath := filepath.Join(s.TemplateDir("local"), "alpine.tar.gz")
	alpineTemplate(t, s)
	tpl, err := os.ReadFile(tplPath)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(tplPath)
	sum := sha256.Sum256(tpl)
	goodSum := hex.EncodeToString(sum[:])

	t.Run("version", func(t *testing.T) {
		v := wantOK(t, "version", c.do("GET", "/version", nil)).obj(t)
		if v["version"] != "9.1.2" || v["release"] != "9.1" {
			t.Errorf("version %v", v)
		}
	})
	t.Run("nextid", func(t *testing.T) {
		if id := wantOK(t, "nextid", c.do("GET", "/cluster/nextid", nil)).str(t); id != "100" {
			t.Errorf("nextid %q", id)
		}
		if id := wantOK(t, "nextid", c.do("GET", "/cluster/nextid", url.Values{"vmid": {"150"}})).str(t); id != "150" {
			t.Errorf("nextid vmid=150: %q", id)
		}
		r := c.do("GET", "/cluster/nextid", url.Values{"vmid": {"99"}})
		if r.Status != 400 || r.Errors["vmid"] != "value must have a minimum value of 100" {
			t.Errorf("nextid vmid=99: %d %s %v", r.Status, r.Reason, r.Errors)
		}
	})

	t.Run("upload", func(t *testing.T) {
		// A wrong checksum: the task fails as PVE's does, nothing is
		// written.
		bad := strings.Repeat("0", 64)
		r := wantOK(t, "upload", c.upload("pve", "local", "bad.tar.gz", tpl, bad))
		exit, _ := c.wait("pve", r.str(t))
		if want := fmt.Sprintf("checksum mismatch: got '%s' != expect '%s'", goodSum, bad); exit != want {
			t.Errorf("wrong checksum: exit status %q, want %q", exit, want)
		}
		if _, err := os.Stat(filepath.Join(s.TemplateDir("local"), "bad.tar.gz")); !os.IsNotExist(err) {
			t.Errorf("a refused upload left a file: %v", err)
		}
		if left, _ := filepath.Glob(s.Path("var/tmp/pveupload-*")); len(left) > 0 {
			t.Errorf("temporary uploads left: %v", left)
		}
		// The right checksum.
		r = wantOK(t, "upload", c.upload("pve", "local", "alpine.tar.gz", tpl, goodSum))
		upid := r.str(t)
		if !strings.HasPrefix(upid, "UPID:pve:") || !strings.HasSuffix(upid, ":imgcopy::ci@pve!full:") {
			t.Errorf("UPID %q", upid)
		}
		exit, sawRunning := c.wait("pve", upid)
		if exit != "OK" || !sawRunning {
			t.Errorf("upload task: exit %q, seen running %v", exit, sawRunning)
		}
		log := c.taskLog("pve", upid)
		if len(log) < 2 || log[len(log)-1] != "TASK OK" || !strings.Contains(strings.Join(log, "\n"), "OK, checksum verified") {
			t.Errorf("upload task log %q", log)
		}
		got, err := os.ReadFile(tplPath)
		if err != nil || !bytes.Equal(got, tpl) {
			t.Errorf("uploaded template: %v (%d bytes of %d)", err, len(got), len(tpl))
		}
		list := wantOK(t, "content", c.do("GET", "/nodes/pve/storage/local/content", url.Values{"content": {"vztmpl"}})).list(t)
		if len(list) != 1 || list[0]["volid"] != "local:vztmpl/alpine.tar.gz" || list[0]["size"] != float64(len(tpl)) {
			t.Errorf("storage content %v", list)
		}
		// A name PVE does not take for a template.
		r = c.upload("pve", "local", "alpine.zip", tpl, goodSum)
		if r.Status != 400 || r.Errors["filename"] != "wrong file extension" {
			t.Errorf("upload alpine.zip: %d %s %v", r.Status, r.Reason, r.Errors)
		}
	})

	t.Run("create", func(t *testing.T) {
		r := wantOK(t, "create", c.do("POST", "/nodes/pve/lxc", url.Values{
			"vmid": {"100"}, "ostemplate": {"local:vztmpl/alpine.tar.gz"}, "hostname": {"web"},
			"rootfs": {"local-lvm:1"}, "memory": {"256"}, "net0": {"name=eth0,bridge=vmbr0,ip=dhcp"},
			"password": {"s3cr3t-pw"},
		}))
		upid := r.str(t)
		if exit, _ := c.wait("pve", upid); exit != "OK" {
			t.Fatalf("create task: %q\n%s", exit, strings.Join(c.taskLog("pve", upid), "\n"))
		}
		out := ok(t, s, "pct", "list")
		if !matchRE(`(?m)^100\s+stopped\s+web\s*$`, out) {
			t.Errorf("pct list does not show the CT created over the API:\n%s", out)
		}
		conf := ok(t, s, "pct", "config", "100")
		wantLines(t, "pct config", conf, "hostname: web", "memory: 256", "ostype: alpine", "unprivileged: 1")
		// And the other way round: a CT of pct's is in the API's list.
		cfg := wantOK(t, "config", c.do("GET", "/nodes/pve/lxc/100/config", nil)).obj(t)
		if cfg["hostname"] != "web" || cfg["digest"] == nil {
			t.Errorf("config over the API: %v", cfg)
		}
		wantOK(t, "set", c.do("PUT", "/nodes/pve/lxc/100/config", url.Values{"memory": {"384"}, "description": {"over the api"}}))
		wantLines(t, "pct config after PUT", ok(t, s, "pct", "config", "100"), "memory: 384", "description: over the api%0A")
		wantLines(t, "config file after PUT", readConfig(t, s, "pve", 100), "#over the api")
		// A JSON body, typed values included, as clients may send it.
		req, err := http.NewRequest("PUT", api.URL+"/api2/json/nodes/pve/lxc/100/config", strings.NewReader(`{"cores": 2, "onboot": true}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		c.authorize(req)
		wantOK(t, "PUT JSON", c.send(req))
		wantLines(t, "pct config after PUT JSON", ok(t, s, "pct", "config", "100"), "cores: 2", "onboot: 1")

		// Start and stop as tasks; the status follows.
		upid = wantOK(t, "start", c.do("POST", "/nodes/pve/lxc/100/status/start", nil)).str(t)
		if exit, _ := c.wait("pve", upid); exit != "OK" {
			t.Fatalf("start: %q", exit)
		}
		if st := wantOK(t, "status", c.do("GET", "/nodes/pve/lxc/100/status/current", nil)).obj(t); st["status"] != "running" {
			t.Errorf("status after start: %v", st)
		}
		r = c.do("POST", "/nodes/pve/lxc/100/status/start", nil)
		if r.Status != 500 || r.Reason != "CT 100 already running" {
			t.Errorf("second start: %d %q", r.Status, r.Reason)
		}
		upid = wantOK(t, "stop", c.do("POST", "/nodes/pve/lxc/100/status/stop", nil)).str(t)
		if exit, _ := c.wait("pve", upid); exit != "OK" {
			t.Fatalf("stop: %q", exit)
		}
		// A VMID that exists: create_vm refuses before its worker.
		r = c.do("POST", "/nodes/pve2/lxc", url.Values{"vmid": {"100"}, "ostemplate": {"local:vztmpl/alpine.tar.gz"}, "rootfs": {"local-lvm:1"}})
		if r.Status != 500 || r.Reason != "CT 100 already exists on node 'pve'" {
			t.Errorf("create of an existing VMID: %d %q", r.Status, r.Reason)
		}
		// A CT of pct's shows in the API's list.
		ok(t, s, "pct", "create", "101", "local:vztmpl/alpine.tar.gz", "--rootfs", "local-lvm:1", "--hostname", "cli")
		names := map[string]bool{}
		for _, row := range wantOK(t, "list", c.do("GET", "/nodes/pve/lxc", nil)).list(t) {
			names[fmt.Sprint(row["name"])] = true
		}
		if !names["web"] || !names["cli"] {
			t.Errorf("GET /nodes/pve/lxc: %v", names)
		}
		// move_volume, as upgrade swaps a rootfs: 101's rootfs to a new
		// volume (the old one kept as unused0), then that unused0 handed
		// to CT 100, and both parameters at once refused before any task.
		if r := c.do("POST", "/nodes/pve/lxc/101/move_volume", url.Values{"volume": {"rootfs"}, "storage": {"local-lvm"}, "target-vmid": {"100"}}); r.Status != 400 || r.Errors["target-vmid"] == "" {
			t.Errorf("move_volume with storage and target-vmid: %d %q %v", r.Status, r.Reason, r.Errors)
		}
		upid = wantOK(t, "move to storage", c.do("POST", "/nodes/pve/lxc/101/move_volume", url.Values{"volume": {"rootfs"}, "storage": {"local-lvm"}})).str(t)
		if exit, _ := c.wait("pve", upid); exit != "OK" {
			t.Fatalf("move_volume to a storage: %q", exit)
		}
		old := fmt.Sprint(wantOK(t, "config", c.do("GET", "/nodes/pve/lxc/101/config", nil)).obj(t)["unused0"])
		upid = wantOK(t, "reassign", c.do("POST", "/nodes/pve/lxc/101/move_volume", url.Values{"volume": {"unused0"}, "target-vmid": {"100"}, "target-volume": {"unused3"}})).str(t)
		if exit, _ := c.wait("pve", upid); exit != "OK" || !strings.Contains(upid, ":move_volume:101-unused0>100-unused3:") {
			t.Fatalf("move_volume to CT 100: %q (%s)", exit, upid)
		}
		if got := wantOK(t, "config", c.do("GET", "/nodes/pve/lxc/100/config", nil)).obj(t)["unused3"]; got == nil || !strings.HasPrefix(fmt.Sprint(got), "local-lvm:vm-100-disk-") || strings.Contains(old, "vm-100-") {
			t.Errorf("CT 100's unused3 after the reassign: %v (was CT 101's %s)", got, old)
		}
		if _, has := wantOK(t, "config", c.do("GET", "/nodes/pve/lxc/101/config", nil)).obj(t)["unused0"]; has {
			t.Errorf("CT 101 still has unused0 after handing it over")
		}
		wantOK(t, "free unused3", c.do("PUT", "/nodes/pve/lxc/100/config", url.Values{"delete": {"unused3"}}))
		upid = wantOK(t, "destroy", c.do("DELETE", "/nodes/pve/lxc/101", url.Values{"purge": {"1"}})).str(t)
		if exit, _ := c.wait("pve", upid); exit != "OK" {
			t.Fatalf("destroy: %q", exit)
		}
		if _, err := os.Stat(s.ConfigPath("pve", 101)); !os.IsNotExist(err) {
			t.Errorf("CT 101's config after DELETE: %v", err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		bad := &apiClient{t: t, api: api, hc: api.Client(), auth: "PVEAPIToken=ci@pve!full=00000000-0000-0000-0000-000000000000"}
		if r := bad.do("GET", "/version", nil); r.Status != 401 || r.Reason != "invalid token value!" {
			t.Errorf("bad secret: %d %q", r.Status, r.Reason)
		}
		none := &apiClient{t: t, api: api, hc: api.Client()}
		if r := none.do("GET", "/version", nil); r.Status != 401 || r.Reason != "No ticket" {
			t.Errorf("no auth: %d %q", r.Status, r.Reason)
		}
		// A token that may allocate VMs but not upload templates.
		weak := &apiClient{t: t, api: api, hc: api.Client(), auth: api.AddToken(t, "ci@pve!weak", map[string][]string{
			"/vms": {"VM.Allocate", "VM.Audit"}, "/storage/local": {"Datastore.Audit"},
		})}
		r := weak.upload("pve", "local", "x.tar.gz", tpl, goodSum)
		if r.Status != 403 || r.Reason != "Permission check failed (/storage/local, Datastore.AllocateTemplate)" {
			t.Errorf("upload without Datastore.AllocateTemplate: %d %q", r.Status, r.Reason)
		}
		r = weak.do("POST", "/nodes/pve/lxc", url.Values{"vmid": {"102"}, "ostemplate": {"local:vztmpl/alpine.tar.gz"}, "rootfs": {"local-lvm:1"}})
		if r.Status != 403 || r.Reason != "Permission check failed (/vms/102, VM.Config.Disk)" {
			t.Errorf("create without VM.Config.Disk: %d %q", r.Status, r.Reason)
		}
		// Parameters PVE's own schema refuses: its messages, word for word.
		r = c.do("POST", "/nodes/pve/lxc", url.Values{
			"vmid": {"103"}, "ostemplate": {"local:vztmpl/alpine.tar.gz"}, "hostname": {"-bad"}, "frobnicate": {"1"},
		})
		if r.Status != 400 || r.Reason != "Parameter verification failed." ||
			r.Errors["hostname"] != "invalid format - value does not look like a valid DNS name" ||
			r.Errors["frobnicate"] != "property is not defined in schema and the schema does not allow additional properties" {
			t.Errorf("create with a bad hostname and an unknown key: %d %q %v", r.Status, r.Reason, r.Errors)
		}
		if _, err := os.Stat(s.ConfigPath("pve", 103)); !os.IsNotExist(err) {
			t.Errorf("a refused create left a config: %v", err)
		}
		var refused *pvetest.APIRequest
		reqs := api.Requests(t)
		for i := range reqs {
			if reqs[i].Path == "/nodes/pve/lxc" && reqs[i].Params["vmid"] == "103" {
				refused = &reqs[i]
			}
		}
		if refused == nil || refused.Check != "pve" || refused.Handler != "create_vm" || refused.Status != 400 {
			t.Errorf("the log does not show PVE's schema refusing the create: %+v", refused)
		}
		r = c.do("GET", "/nodes/pve/lxc/100/config", url.Values{"bogus": {"1"}})
		if r.Status != 400 || r.Errors["bogus"] == "" {
			t.Errorf("GET config with an unknown parameter: %d %v", r.Status, r.Errors)
		}
	})

	t.Run("ticket", func(t *testing.T) {
		api.AddUser(t, "ops@pve", "hunter2-pw", map[string][]string{"/": {"VM.Audit", "Datastore.Audit"}})
		anon := &apiClient{t: t, api: api, hc: api.Client()}
		if r := anon.do("POST", "/access/ticket", url.Values{"username": {"ops@pve"}, "password": {"wrong"}}); r.Status != 401 {
			t.Errorf("wrong password: %d %q", r.Status, r.Reason)
		}
		tk := wantOK(t, "ticket", anon.do("POST", "/access/ticket", url.Values{"username": {"ops@pve"}, "password": {"hunter2-pw"}})).obj(t)
		tc := &apiClient{t: t, api: api, hc: api.Client(), ticket: fmt.Sprint(tk["ticket"])}
		wantOK(t, "GET with a ticket", tc.do("GET", "/nodes/pve/lxc/100/status/current", nil))
		if r := tc.do("PUT", "/nodes/pve/lxc/100/config", url.Values{"memory": {"300"}}); r.Status != 401 || r.Reason != "Permission denied - invalid csrf token" {
			t.Errorf("write without CSRF token: %d %q", r.Status, r.Reason)
		}
		tc.csrf = fmt.Sprint(tk["CSRFPreventionToken"])
		if r := tc.do("PUT", "/nodes/pve/lxc/100/config", url.Values{"memory": {"300"}}); r.Status != 403 || r.Reason != "Permission check failed (/vms/100, VM.Config.Disk|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|VM.Config.Options)" {
			t.Errorf("write without privilege: %d %q", r.Status, r.Reason)
		}
	})

	t.Run("cluster", func(t *testing.T) {
		s.AddSharedStorage(t, "shared")
		stores := wantOK(t, "storage", c.do("GET", "/nodes/pve2/storage", url.Values{"content": {"vztmpl"}})).list(t)
		var ids []string
		for _, st := range stores {
			ids = append(ids, fmt.Sprint(st["storage"]))
			if st["storage"] == "shared" && st["shared"] != float64(1) {
				t.Errorf("shared storage: %v", st)
			}
		}
		if strings.Join(ids, ",") != "local,offline,shared" {
			t.Errorf("vztmpl storages on pve2: %v", ids)
		}
		r := wantOK(t, "upload", c.upload("pve2", "shared", "alpine-shared.tar.gz", tpl, goodSum))
		if exit, _ := c.wait("pve2", r.str(t)); exit != "OK" {
			t.Fatalf("upload to shared: %q", exit)
		}
		r = wantOK(t, "create on pve2", c.do("POST", "/nodes/pve2/lxc", url.Values{
			"vmid": {"200"}, "ostemplate": {"shared:vztmpl/alpine-shared.tar.gz"}, "rootfs": {"shared:1"}, "hostname": {"two"},
		}))
		if exit, _ := c.wait("pve2", r.str(t)); exit != "OK" {
			t.Fatalf("create on pve2: %q", exit)
		}
		if _, err := os.Stat(s.ConfigPath("pve2", 200)); err != nil {
			t.Errorf("CT 200 on pve2: %v", err)
		}
		if out := ok(t, s, "pct", "list"); strings.Contains(out, "two") {
			t.Errorf("pct on pve lists pve2's CT:\n%s", out)
		}
		found := false
		for _, row := range wantOK(t, "resources", c.do("GET", "/cluster/resources", url.Values{"type": {"vm"}})).list(t) {
			if row["vmid"] == float64(200) && row["node"] == "pve2" {
				found = true
			}
		}
		if !found {
			t.Errorf("/cluster/resources does not list CT 200 on pve2")
		}
		if r := c.do("GET", "/nodes/pve3/lxc", nil); r.Status != 500 || r.Reason != "no such cluster node 'pve3'" {
			t.Errorf("unknown node: %d %q", r.Status, r.Reason)
		}
	})

	// Every request was judged: by PVE's schema, or (pve-manager's
	// methods) by hand; none went unchecked, and no secret is logged.
	raw, err := os.ReadFile(api.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"s3cr3t-pw", "hunter2-pw", full[strings.LastIndex(full, "=")+1:]} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the request log holds a secret %q", secret)
		}
	}
	n := api.CheckJudged(t)
	t.Logf("%d requests, each judged by PVE's schema or by hand", n)
}

// TestAPIWithoutOracle: without NEXCAGE_PVE_ORACLE the server still
// serves, says in its log that PVE's schema is not checking, and marks
// every request unchecked by it.
func TestAPIWithoutOracle(t *testing.T) {
	s := pvetest.NewStandIn(t)
	var env []string
	for _, e := range s.Env {
		if !strings.HasPrefix(e, pveoracle.Env+"=") {
			env = append(env, e)
		}
	}
	s.Env = env
	api := s.StartAPI(t, pvetest.APIOptions{})
	if note := api.OracleNote(t); !strings.HasPrefix(note, "off: ") {
		t.Errorf("oracle note %q", note)
	}
	c := &apiClient{t: t, api: api, hc: api.Client(), auth: api.AddToken(t, "root@pam!t", map[string][]string{"/": {"*"}})}
	wantOK(t, "nextid", c.do("GET", "/cluster/nextid", nil))
	// The stand-in's own schema still refuses what pct refuses.
	r := c.do("POST", "/nodes/pve/lxc", url.Values{"vmid": {"100"}, "ostemplate": {"local:vztmpl/x.tar.gz"}, "hostname": {"-bad"}})
	if r.Status != 400 || r.Errors["hostname"] == "" {
		t.Errorf("bad hostname without the oracle: %d %v", r.Status, r.Errors)
	}
	if r := c.do("GET", "/nodes/pve/lxc/1e3/config", nil); r.Status != 400 || r.Errors["vmid"] == "" {
		t.Errorf("a VMID of 1e3 without the oracle: %d %q %v", r.Status, r.Reason, r.Errors)
	}
	for _, q := range api.Requests(t) {
		if q.Path == "/nodes/pve/lxc" && q.Check != "none" {
			t.Errorf("without the oracle, the create is logged as checked %q", q.Check)
		}
	}
}

func matchRE(pattern, s string) bool {
	return regexp.MustCompile(pattern).MatchString(s)
}

// TestAPIOracleFollowsPVEVersion: the schema that judges the requests is
// the pve-container of the PVE version the stand-in plays: entrypoint
// came with PVE 9.1, so 9.0's schema refuses it and 9.1's takes it.
func TestAPIOracleFollowsPVEVersion(t *testing.T) {
	pveoracle.Require(t)
	s := pvetest.NewStandIn(t)
	for _, v := range []struct {
		pve    string
		refuse bool
	}{{"9.0.5", true}, {"9.1.2", false}, {"9.2.0", false}} {
		api := s.StartAPI(t, pvetest.APIOptions{Env: []string{"PVE_VERSION=" + v.pve}})
		ov, _ := pveoracle.ByPVE(v.pve[:3])
		if note := api.OracleNote(t); !strings.HasPrefix(note, "on: ") || !strings.HasSuffix(note, ov.Src) {
			t.Errorf("PVE %s: oracle %q, want pve-container from %s", v.pve, note, ov.Src)
		}
		c := &apiClient{t: t, api: api, hc: api.Client(), auth: api.AddToken(t, "ci@pve!v", map[string][]string{"/": {"*"}})}
		r := c.do("POST", "/nodes/pve/lxc", url.Values{
			"vmid": {"100"}, "ostemplate": {"local:vztmpl/missing.tar.gz"}, "entrypoint": {"/app/run"},
		})
		refused := r.Status == 400 && r.Errors["entrypoint"] == "property is not defined in schema and the schema does not allow additional properties"
		if refused != v.refuse {
			t.Errorf("PVE %s: create with entrypoint: %d %q %v", v.pve, r.Status, r.Reason, r.Errors)
		}
		if !v.refuse && (r.Status != 500 || r.Reason != "can't find file 'local:vztmpl/missing.tar.gz'") {
			t.Errorf("PVE %s: create of a missing template: %d %q", v.pve, r.Status, r.Reason)
		}
		reqs := api.Requests(t)
		if len(reqs) != 1 || reqs[0].Check != "pve" {
			t.Errorf("PVE %s: log %+v", v.pve, reqs)
		}
		// Stop it now: the next server of the loop writes the same files.
		api.Stop(t)
	}
}
