package pct_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/rootfs"
)

// recorder is the host's Runner with every command it was asked to run
// written down, so a test can tell which PVE commands a deploy reached.
type recorder struct {
	inner pct.Runner
	mu    sync.Mutex
	calls []string
	// argvs are the pct/pvesh create, set and start calls with the
	// stand-in's verdict, for PVE's own CLI to judge (checkArgvs).
	argvs []judged
}

type judged struct {
	argv   []string
	ok     bool
	stderr string
	pve    string // the stand-in's PVE version then (PVE_VERSION, 9.1 by default)
}

func (r *recorder) note(argv []string, stderr string, code int) {
	if len(argv) > 1 && (argv[0] == "pct" || argv[0] == "pvesh") && (argv[1] == "create" || argv[1] == "set" || argv[1] == "start" || argv[1] == "mount" || argv[1] == "unmount") {
		r.mu.Lock()
		pve := "9.1"
		if v := os.Getenv("PVE_VERSION"); len(v) >= 3 {
			pve = v[:3]
		}
		r.argvs = append(r.argvs, judged{append([]string(nil), argv...), code == 0, stderr, pve})
		r.mu.Unlock()
	}
}

func (r *recorder) Run(ctx context.Context, argv []string) (string, string, int, error) {
	r.mu.Lock()
	r.calls = append(r.calls, strings.Join(argv, " "))
	r.mu.Unlock()
	out, stderr, code, err := r.inner.Run(ctx, argv)
	r.note(argv, stderr, code)
	return out, stderr, code, err
}

// RunInput is Run for a command given a standard input (pct create's
// password): the argv is recorded, the input is not.
func (r *recorder) RunInput(ctx context.Context, argv []string, stdin string) (string, string, int, error) {
	r.mu.Lock()
	r.calls = append(r.calls, strings.Join(argv, " "))
	r.mu.Unlock()
	out, stderr, code, err := r.inner.(pct.InputRunner).RunInput(ctx, argv, stdin)
	r.note(argv, stderr, code)
	return out, stderr, code, err
}

// checkArgvs has PVE's own CLI (of the version the stand-in played
// then) judge every create, set and start the test ran, when the oracle is
// there: what the stand-in accepted PVE must accept, and what it refused
// as a parameter error PVE must refuse.
func (r *recorder) checkArgvs(t *testing.T) {
	if os.Getenv(pveoracle.Env) == "" {
		return
	}
	o := pveoracle.Require(t)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.argvs {
		if !j.ok && !strings.HasPrefix(j.stderr, "400 ") {
			continue
		}
		v, known := pveoracle.ByPVE(j.pve)
		if !known {
			v, _ = pveoracle.ByPVE("9.1")
		}
		rejected, out := o.RejectsArgv(t, v, j.argv...)
		if j.ok && rejected {
			t.Errorf("the stand-in accepted %q, PVE %s's own CLI refuses it:\n%s", j.argv, v.PVE, out)
		}
		if !j.ok && !rejected {
			t.Errorf("the stand-in refused %q (%s), PVE %s's own CLI accepts it", j.argv, j.stderr, v.PVE)
		}
	}
}

// ran lists the commands run that start with prefix ("pct create").
func (r *recorder) ran(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		if c == prefix || strings.HasPrefix(c, prefix+" ") {
			out = append(out, c)
		}
	}
	return out
}

// changes lists the commands run that change the host: everything but
// pveversion and the read-only pvesh get and pvesm path.
func (r *recorder) changes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		if c != "pveversion" && c != "pveversion -v" && !strings.HasPrefix(c, "pvesh get ") && !strings.HasPrefix(c, "pvesm path ") {
			out = append(out, c)
		}
	}
	return out
}

// deployHost makes the stand-in cluster this process's PVE, as `nexcage
// deploy` finds it (see pvetest.NewStandInHost), and returns the host with a
// recording runner. Call it after testenv.CheckLeaks, so that the
// stand-in's files are counted too.
func deployHost(t *testing.T) (*pvetest.StandIn, *pct.Host, *recorder) {
	t.Helper()
	s := pvetest.NewStandInHost(t)
	h := pct.NewHost(s.Root)
	rec := &recorder{inner: h.Runner}
	h.Runner = rec
	t.Cleanup(func() { rec.checkArgvs(t) })
	return s, h, rec
}

// buildAlpineTemplate builds the real Alpine minirootfs into a template in
// dir the way `nexcage pull`, `unpack` and `convert` do, and returns a
// function that loads it as `nexcage deploy` does (a fresh value each
// time, so a test may change its config).
func buildAlpineTemplate(t *testing.T, dir string) func() *pct.Template {
	t.Helper()
	ctx := context.Background()
	alpine, err := testimage.Alpine("amd64")
	if err != nil {
		t.Fatal(err)
	}
	b, err := convert.LoadBundle(testbundle.Unpack(t, testimage.Case{Name: "alpine", Image: alpine}, rootfs.UnpackOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := convert.Convert(ctx, b, convert.Options{Output: filepath.Join(dir, "out") + "/", Name: "alpine", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	return func() *pct.Template {
		// As deploy reads it: convert's own .conf passes the allow-list.
		tpl, err := pct.LoadTemplate(ctx, pct.NewHost(""), res.Template, pct.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tpl
	}
}

// noCT checks that the stand-in has no trace of a container: no config,
// not in pct list, no LXC directory, no rootfs volume.
func noCT(t *testing.T, s *pvetest.StandIn, vmid int) {
	t.Helper()
	if _, err := os.Stat(s.ConfigPath("pve", vmid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CT %d's config is still there (%v)", vmid, err)
	}
	if out, _, _ := s.Run(t, "pct", "list"); regexp.MustCompile(`(?m)^` + strconv.Itoa(vmid) + `\s`).MatchString(out) {
		t.Errorf("pct list still shows CT %d:\n%s", vmid, out)
	}
	if _, err := os.Stat(s.Path("var/lib/lxc/" + strconv.Itoa(vmid))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CT %d's LXC directory is still there (%v)", vmid, err)
	}
	if ents, _ := os.ReadDir(s.Path("var/lib/pvesim/local-lvm")); len(ents) != 0 {
		t.Errorf("volumes left on local-lvm: %v", names(ents))
	}
}

func names(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// wantKind checks that err is a *pct.Error of the kind (errors.Is) and
// that its message holds each of words.
func wantKind(t *testing.T, err, kind error, words ...string) *pct.Error {
	t.Helper()
	var pe *pct.Error
	if !errors.As(err, &pe) || !errors.Is(err, kind) {
		t.Fatalf("error %v (%T), want a *pct.Error of kind %q", err, err, kind)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	return pe
}

// TestDeployLeaks runs MakePlan and Deploy in this process against the PVE
// stand-in, on success and on each failure path, and checks every time that
// no file descriptor stays open and nothing is left in the temporary
// directory (the stand-in's own files included), besides what the path
// must do or leave undone.
func TestDeployLeaks(t *testing.T) {
	testenv.RequireRoot(t)
	template := buildAlpineTemplate(t, t.TempDir())
	ctx := context.Background()
	tmplName := filepath.Base(template().File)
	volid := "local:vztmpl/" + tmplName

	t.Run("success", func(t *testing.T) {
		testenv.CheckLeaks(t)
		s, h, rec := deployHost(t)
		p, err := pct.MakePlan(ctx, h, template(), pct.Options{Hostname: "web", Memory: 256, Start: true})
		if err != nil {
			t.Fatal(err)
		}
		res, err := pct.Deploy(ctx, h, p)
		if err != nil {
			t.Fatal(err)
		}
		if res.VMID != 100 || res.VolID != volid || !res.Uploaded || !res.Started {
			t.Errorf("result %+v, want CT 100 from %s, uploaded and started", res, volid)
		}
		for _, f := range []string{tmplName, strings.TrimSuffix(tmplName, ".tar.zst") + ".conf", strings.TrimSuffix(tmplName, ".tar.zst") + ".json"} {
			if _, err := os.Stat(filepath.Join(s.TemplateDir("local"), f)); err != nil {
				t.Errorf("not uploaded: %v", err)
			}
		}
		conf, err := os.ReadFile(s.ConfigPath("pve", 100))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"hostname: web\n", "memory: 256\n", "#nexcage%3A template=" + lxc.EncodeText(volid)} {
			if !strings.Contains(string(conf), want) {
				t.Errorf("CT config lacks %q:\n%s", want, conf)
			}
		}
		if out, _, _ := s.Run(t, "pct", "status", "100"); strings.TrimSpace(out) != "status: running" {
			t.Errorf("pct status 100: %q, want running", out)
		}
		if got := rec.ran("pct destroy"); len(got) != 0 {
			t.Errorf("a successful deploy destroyed something: %v", got)
		}
	})

	// Refused by the flags alone: not one PVE command runs.
	t.Run("refused before any command", func(t *testing.T) {
		testenv.CheckLeaks(t)
		s, h, rec := deployHost(t)
		_, err := pct.MakePlan(ctx, h, template(), pct.Options{Hostname: "bad_name"})
		if pe := wantKind(t, err, pct.ErrInvalidArgument, `Hostname "bad_name" is not a valid DNS name`, "(Hostname)"); pe.Param != "hostname" {
			t.Errorf("param %q, want hostname", pe.Param)
		}
		if len(rec.calls) != 0 {
			t.Errorf("commands ran before the refusal: %v", rec.calls)
		}
		if ents, _ := os.ReadDir(s.TemplateDir("local")); len(ents) != 0 {
			t.Errorf("template storage changed: %v", names(ents))
		}
	})

	// A storage that does not exist: refused after the read-only queries,
	// before anything on the host changes.
	t.Run("missing storage", func(t *testing.T) {
		testenv.CheckLeaks(t)
		s, h, rec := deployHost(t)
		_, err := pct.MakePlan(ctx, h, template(), pct.Options{Storage: "nope"})
		if pe := wantKind(t, err, pct.ErrNotFound, "storage 'nope' (Storage) does not exist", "local-lvm"); pe.Param != "storage" {
			t.Errorf("param %q, want storage", pe.Param)
		}
		if len(rec.ran("pvesh get /storage")) != 1 {
			t.Errorf("the storages were not asked for: %v", rec.calls)
		}
		if c := rec.changes(); len(c) != 0 {
			t.Errorf("commands that change the host ran: %v", c)
		}
		if ents, _ := os.ReadDir(s.TemplateDir("local")); len(ents) != 0 {
			t.Errorf("template storage changed: %v", names(ents))
		}
		noCT(t, s, 100)
	})

	// The template storage fills up during the upload: Deploy fails before
	// pct create, and the partly written template is removed.
	t.Run("upload fails on a full template storage", func(t *testing.T) {
		testenv.CheckLeaks(t)
		s, h, rec := deployHost(t)
		dir := s.TemplateDir("local")
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		p, err := pct.MakePlan(ctx, h, template(), pct.Options{Hostname: "full"})
		if err != nil {
			t.Fatal(err)
		}
		if p.Upload == nil || p.Upload.Skip {
			t.Fatalf("the plan does not upload: %+v", p.Upload)
		}
		_, err = pct.Deploy(ctx, h, p)
		wantKind(t, err, pct.ErrStorage, "no space left on device", "check free space in the template storage")
		if c := rec.changes(); len(c) != 0 {
			t.Errorf("PVE commands that change the host ran after a failed upload: %v", c)
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			t.Errorf("a failed upload left %s in the template storage (the template, its sidecars and temporary files must all go)", e.Name())
		}
		noCT(t, s, 100)
	})

	// pct create itself fails (PVE refuses a parameter): nothing to undo,
	// no destroy, no container; the uploaded template stays for the next
	// try.
	t.Run("pct create fails", func(t *testing.T) {
		testenv.CheckLeaks(t)
		s, h, rec := deployHost(t)
		p, err := pct.MakePlan(ctx, h, template(), pct.Options{Hostname: "refused", Extra: []string{"--onboot", "maybe"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = pct.Deploy(ctx, h, p)
		if pe := wantKind(t, err, pct.ErrInvalidArgument, "PVE refused onboot: "); pe.Param != "onboot" || !strings.Contains(pe.Raw, "$ pct create 100 ") {
			t.Errorf("param %q, raw %q: want onboot from pct create 100", pe.Param, pe.Raw)
		}
		if len(rec.ran("pct create 100")) != 1 {
			t.Errorf("pct create did not run once: %v", rec.calls)
		}
		if got := rec.ran("pct destroy"); len(got) != 0 {
			t.Errorf("destroyed a container that was never made: %v", got)
		}
		noCT(t, s, 100)
		if _, err := os.Stat(filepath.Join(s.TemplateDir("local"), tmplName)); err != nil {
			t.Errorf("the uploaded template is gone: %v", err)
		}
	})

	// A step after the create fails (LXC refuses to start: the container's
	// mapped root cannot reach a bind mount's source, in a directory only
	// the host's root may enter): the container is destroyed again.
	unreachable := func(t *testing.T, s *pvetest.StandIn) []pct.BindMount {
		src := s.Path("srv/private/data")
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Dir(src), 0o700)
		return []pct.BindMount{{Source: src, Dest: "/srv"}}
	}
	t.Run("start fails and is rolled back", func(t *testing.T) {
		testenv.CheckLeaks(t)
		s, h, rec := deployHost(t)
		p, err := pct.MakePlan(ctx, h, template(), pct.Options{Hostname: "broken", Start: true, Mounts: unreachable(t, s)})
		if err != nil {
			t.Fatal(err)
		}
		res, err := pct.Deploy(ctx, h, p)
		if err == nil {
			t.Fatalf("deploy succeeded (%+v); LXC should have refused the bind mount", res)
		}
		wantKind(t, err, pct.ErrFailed, "CT 100 was destroyed again: nothing was left behind")
		var order []string
		for _, c := range rec.calls {
			if strings.HasPrefix(c, "pct ") {
				order = append(order, strings.Join(strings.Fields(c)[:3], " "))
			}
		}
		if want := "pct create 100,pct set 100,pct start 100,pct destroy 100"; strings.Join(order, ",") != want {
			t.Errorf("pct commands %v, want %s", order, want)
		}
		noCT(t, s, 100)
	})

	t.Run("start fails with keep-failed", func(t *testing.T) {
		testenv.CheckLeaks(t)
		s, h, rec := deployHost(t)
		p, err := pct.MakePlan(ctx, h, template(), pct.Options{Hostname: "broken", Start: true, KeepFailed: true, Mounts: unreachable(t, s)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = pct.Deploy(ctx, h, p)
		// Options.KeepFailed alone keeps it: the plan carries it to Deploy.
		wantKind(t, err, pct.ErrFailed, "CT 100 was kept as it is, as asked", "pct destroy 100 --purge")
		var ke *pct.KeptError
		if !errors.As(err, &ke) || ke.VMID != 100 {
			t.Errorf("err = %#v, want a *pct.KeptError for CT 100", err)
		}
		if got := rec.ran("pct destroy"); len(got) != 0 {
			t.Errorf("--keep-failed destroyed the container: %v", got)
		}
		if out, _, _ := s.Run(t, "pct", "list"); !regexp.MustCompile(`(?m)^100 +stopped +broken`).MatchString(out) {
			t.Errorf("pct list does not show the kept CT 100 stopped:\n%s", out)
		}
	})
}

// TestDeployAppBootsWithEverything deploys an application container
// through the stand-in on real LXC, as PVE 9.2 (pve-container 6.1), and
// checks from inside what it gets: every environment variable (names PVE's
// env pattern refuses included), its user, its working directory; and that
// `pct shutdown` delivers SIGTERM (the default stop signal deploy writes)
// to its entrypoint.
func TestDeployAppBootsWithEverything(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "lxc-start")
	template := buildAlpineTemplate(t, t.TempDir())
	ctx := context.Background()
	testenv.CheckLeaks(t)
	s, h, _ := deployHost(t)
	t.Setenv("PVE_VERSION", "9.2.0")
	tp := template()
	// What convert writes for an image with this config (FromSpec), here
	// on the real Alpine rootfs: the entrypoint traps SIGTERM to leave a
	// mark, and writes its environment, ids and directory where the test
	// reads them after the shutdown.
	// (A script file, put in the rootfs before the start: lxc.init.cmd's
	// quoting is another test's subject.)
	tp.Config.Entrypoint = "/bin/sh /entry.sh"
	tp.Config.Cmode = "console"
	tp.Config.OSType = "unmanaged"
	tp.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm", "HOME=/tmp", "GREETING=hello world"}
	tp.Config.Raw = append(tp.Config.Raw,
		lxc.Option{Key: "lxc.init.cwd", Value: "/tmp"}, lxc.Option{Key: "lxc.init.uid", Value: "1000"}, lxc.Option{Key: "lxc.init.gid", Value: "1000"})
	p, err := pct.MakePlan(ctx, h, tp, pct.Options{Hostname: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Container != lxc.PVE92 {
		t.Fatalf("planned for pve-container %s, want %s (PVE_VERSION=9.2.0)", p.Container, lxc.PVE92)
	}
	if _, err := pct.Deploy(ctx, h, p); err != nil {
		t.Fatal(err)
	}
	rootfs := s.Path("var/lib/lxc/100/rootfs")
	script := "env > /tmp/env; id -u > /tmp/uid; pwd > /tmp/cwd\ntrap 'echo term > /tmp/got-term; exit 0' TERM\nwhile true; do sleep 1; done\n"
	if err := os.WriteFile(filepath.Join(rootfs, "entry.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// Through h: its commands see PVE_VERSION=9.2.0 (s.Env predates it).
	if _, err := h.Run(ctx, "pct", "start", "100"); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(rootfs, name))
		return string(b)
	}
	// The entrypoint writes its files right after it starts.
	for i := 0; i < 50 && read("tmp/cwd") == ""; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	env := read("tmp/env")
	for _, want := range []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm", "HOME=/tmp", "GREETING=hello world"} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("the entrypoint's environment lacks %s:\n%s", want, env)
		}
	}
	if got := strings.TrimSpace(read("tmp/uid")); got != "1000" {
		t.Errorf("the entrypoint runs as uid %q, want 1000", got)
	}
	if got := strings.TrimSpace(read("tmp/cwd")); got != "/tmp" {
		t.Errorf("the entrypoint runs in %q, want /tmp", got)
	}
	if _, err := h.Run(ctx, "pct", "shutdown", "100", "--timeout", "20"); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(read("tmp/got-term")); got != "term" {
		t.Errorf("pct shutdown did not deliver SIGTERM to the entrypoint (mark %q)", got)
	}
	if _, err := h.Run(ctx, "pct", "destroy", "100", "--purge"); err != nil {
		t.Error(err)
	}
}
