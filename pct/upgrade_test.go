package pct_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// appTemplate writes an application template: the real Alpine
// minirootfs with extra files, gzip'd with "./" names as PVE expects,
// and returns it as deploy loads a template, with the image's settings.
func appTemplate(t *testing.T, dir, name, digest string, extra map[string]string, c lxc.Config) *pct.Template {
	t.Helper()
	return appTemplateDirs(t, dir, name, digest, extra, nil, c)
}

// appTemplateDirs is appTemplate with directories added after the files
// (their Name without "./", Uid, Gid and Mode as the image has them).
func appTemplateDirs(t *testing.T, dir, name, digest string, extra map[string]string, dirs []tar.Header, c lxc.Config) *pct.Template {
	t.Helper()
	zr, err := testimage.AlpineTar("amd64")
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	path := filepath.Join(dir, name+".tar.gz")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	for hdr, body := range testenv.TarMembers(t, zr) {
		if !strings.HasPrefix(hdr.Name, "./") {
			hdr.Name = "./" + hdr.Name
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		body := extra[k]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + k, Mode: 0o755, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	for _, d := range dirs {
		if d.Typeflag == 0 { // a directory unless said otherwise (a hostile symlink)
			d.Typeflag, d.Name = tar.TypeDir, strings.TrimSuffix(d.Name, "/")+"/"
		}
		d.Name, d.ModTime = "./"+d.Name, time.Unix(0, 0)
		if err := tw.WriteHeader(&d); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	out.Close()
	c.OSType, c.Cmode = "unmanaged", "console"
	return &pct.Template{File: path, Config: &c, Volumes: []string{"/data"}, Image: "registry.example/app:" + name, Digest: digest}
}

// listing is a rootfs as a sorted list of path, mode, owner and content.
func listing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v %d", rel, info.Mode(), info.Size())
		if info.Mode().IsRegular() && info.Size() < 4096 {
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %q", c)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// upgradeHost is lxcHost playing PVE version pve.
func upgradeHost(t *testing.T, pve string) (*pvetest.StandIn, *pct.Host, *recorder, string) {
	t.Helper()
	s, h, rec, dir := lxcHost(t)
	t.Setenv("PVE_VERSION", pve)
	return s, h, rec, dir
}

// lxcHost is deployHost for a test that starts CTs (it needs root and
// LXC), and a directory for the test's templates.
func lxcHost(t *testing.T) (*pvetest.StandIn, *pct.Host, *recorder, string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "lxc-start")
	s, h, rec := deployHost(t)
	return s, h, rec, t.TempDir()
}

// deployCT plans and deploys a CT (on a fresh stand-in, 100) from tmpl
// as opts say.
func deployCT(t *testing.T, h *pct.Host, tmpl *pct.Template, opts pct.Options) {
	t.Helper()
	p, err := pct.MakePlan(context.Background(), h, tmpl, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pct.Deploy(context.Background(), h, p); err != nil {
		t.Fatal(err)
	}
}

// deployedApp deploys a CT named host from the app template v1
// (/entry.sh, version 1) on a stand-in playing PVE pve, and makes v2
// (version 2, its entrypoint /entry2) to upgrade it to.
func deployedApp(t *testing.T, pve, host, entry2 string) (*pvetest.StandIn, *pct.Host, *pct.Template, *pct.Template) {
	t.Helper()
	s, h, _, dir := upgradeHost(t, pve)
	v1 := appTemplate(t, dir, "v1", "sha256:1111", map[string]string{"entry.sh": entryScript, "app/version": "1\n"}, lxc.Config{Entrypoint: "/entry.sh"})
	v2 := appTemplate(t, dir, "v2", "sha256:2222", map[string]string{entry2: entryScript, "app/version": "2\n"}, lxc.Config{Entrypoint: "/" + entry2})
	deployCT(t, h, v1, pct.Options{Hostname: host, VolumeSize: 1, RootfsSize: 1})
	return s, h, v1, v2
}

const entryScript = "#!/bin/sh\ntrap 'exit 0' TERM\nwhile true; do sleep 1; done\n"

// TestUpgradeAppContainer: an application container made from v1 with a
// volume, its data written from inside and its environment changed by the
// user, moves to v2 (new files, a changed default, a new variable, a new
// entrypoint): VMID, MAC, hostname, the volume and its data stay, the
// user's change stays, the new defaults apply. A v3 whose health command
// fails is rolled back to v2 byte for byte; upgrading to v2 again changes
// nothing. Every command PVE's own pct CLI of 9.0, 9.1 and 9.2 parses, and
// the configs pass PVE 9.1's and 9.2's parser.
func TestUpgradeAppContainer(t *testing.T) {
	ctx := context.Background()
	s, h, rec, dir := upgradeHost(t, "9.2.0")
	env := func(mode string, more ...string) []string {
		return append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello", "MODE=" + mode}, more...)
	}
	v1 := appTemplate(t, dir, "v1", "sha256:1111", map[string]string{"entry.sh": entryScript, "app/version": "1\n"},
		lxc.Config{Entrypoint: "/entry.sh", Env: env("one")})
	v2 := appTemplate(t, dir, "v2", "sha256:2222", map[string]string{"entry2.sh": entryScript, "app/version": "2\n", "app/new-in-v2": "yes\n"},
		lxc.Config{Entrypoint: "/entry2.sh --v2", Env: env("two", "ADDED=1")})
	v3 := appTemplate(t, dir, "v3", "sha256:3333", map[string]string{"entry2.sh": entryScript, "app/version": "3\n"},
		lxc.Config{Entrypoint: "/entry2.sh --v3", Env: env("three")})

	deployCT(t, h, v1, pct.Options{Hostname: "app", VolumeSize: 1, RootfsSize: 1, Start: true})
	if _, err := h.Run(ctx, "pct", "exec", "100", "--", "sh", "-c", "echo precious > /data/file"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(ctx, "pct", "stop", "100"); err != nil {
		t.Fatal(err)
	}
	// The user's change: GREETING, in the config as PVE keeps it.
	conf := s.ConfigPath("pve", 100)
	b, _ := os.ReadFile(conf)
	if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "GREETING=hello", "GREETING=custom", 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(ctx, "pct", "start", "100"); err != nil {
		t.Fatal(err)
	}
	before := readConf(t, s.ConfigPath("pve", 100))

	// v2.
	up, err := pct.PlanUpgrade(ctx, h, 100, v1, v2, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	merged := map[string]pct.MergeRow{}
	for _, r := range up.Merge {
		merged[r.Key] = r
	}
	if r := merged["env GREETING"]; r.Result != "GREETING=custom" || !r.Kept {
		t.Errorf("merge of GREETING = %+v, want the user's value kept", r)
	}
	if r := merged["env MODE"]; r.Result != "MODE=two" || r.Kept {
		t.Errorf("merge of MODE = %+v, want the new default", r)
	}
	if r := merged["entrypoint"]; r.Result != "/entry2.sh --v2" {
		t.Errorf("merge of the entrypoint = %+v", r)
	}
	res, err := pct.Upgrade(ctx, h, up)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Started {
		t.Errorf("the upgraded CT did not start: %+v", res)
	}
	after := readConf(t, s.ConfigPath("pve", 100))
	for _, k := range []string{"net0", "hostname", "mp0", "memory"} {
		if confKey(before, k) == "" || confKey(before, k) != confKey(after, k) {
			t.Errorf("%s changed: %q → %q", k, confKey(before, k), confKey(after, k))
		}
	}
	for _, l := range []string{"lxc.environment.runtime: GREETING=custom", "lxc.environment.runtime: MODE=two", "lxc.environment.runtime: ADDED=1", "entrypoint: /entry2.sh --v2", "#nexcage%3A template=local%3Avztmpl/v2.tar.gz image=registry.example/app%3Av2 digest=sha256%3A2222"} {
		if !strings.Contains(after, l+"\n") {
			t.Errorf("the upgraded config lacks %q:\n%s", l, after)
		}
	}
	if strings.Contains(after, "unused") || confKey(after, "rootfs") == confKey(before, "rootfs") {
		t.Errorf("the old rootfs is still there, or the rootfs is the old one:\n%s", after)
	}
	out, err := h.Run(ctx, "pct", "exec", "100", "--", "cat", "/data/file", "/app/version", "/app/new-in-v2")
	if out != "precious\n2\nyes\n" || err != nil {
		t.Errorf("inside the upgraded CT: %q, %v; want the volume's data and v2's files", out, err)
	}
	if _, err := h.Run(ctx, "pct", "exec", "100", "--", "test", "-e", "/entry.sh"); err == nil {
		t.Errorf("v1's /entry.sh is still in the new rootfs")
	}
	pct2 := readConf(t, s.ConfigPath("pve", 100))
	rootDir := volDir(t, s.Path("var/lib/pvesim"), confKey(pct2, "rootfs"))
	rootBefore := listing(t, rootDir)

	// restored upgrades v2 to bad, which must fail with an *UpgradeError
	// naming want and put v2 back: its config and its rootfs as they were.
	// It returns the upgrade's plan.
	restored := func(bad *pct.Template, opts pct.UpgradeOptions, want, after string) *pct.UpgradePlan {
		t.Helper()
		up, err := pct.PlanUpgrade(ctx, h, 100, v2, bad, opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pct.Upgrade(ctx, h, up)
		var ue *pct.UpgradeError
		if !errors.As(err, &ue) || !ue.Restored || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an *UpgradeError naming %q, restored", bad.Image, err, want)
		}
		if got := readConf(t, s.ConfigPath("pve", 100)); got != pct2 {
			t.Errorf("after %s the config differs:\n%s\nwant\n%s", after, got, pct2)
		}
		if got := listing(t, rootDir); got != rootBefore {
			t.Errorf("after %s the rootfs listing differs", after)
		}
		return up
	}

	// v3 fails its health check: everything back.
	up3 := restored(v3, pct.UpgradeOptions{HealthCmd: "test -e /app/healthy"}, "health command", "the rollback")
	if ents, _ := os.ReadDir(s.Path("var/lib/pvesim/local-lvm")); len(ents) != 2 {
		t.Errorf("volumes after the rollback: %v, want the rootfs and the data volume", names(ents))
	}
	if st, _ := h.Run(ctx, "pct", "status", "100"); st != "status: running\n" {
		t.Errorf("after the rollback CT 100 is %q, want running again", st)
	}

	// A v3 whose entrypoint does not exist does not stay up: back to v2.
	v3b := appTemplate(t, dir, "v3b", "sha256:3334", map[string]string{"app/version": "3\n"},
		lxc.Config{Entrypoint: "/no/such/entrypoint", Env: env("three")})
	restored(v3b, pct.UpgradeOptions{}, "starting CT 100", "the failed start")
	if out, err := h.Run(ctx, "pct", "exec", "100", "--", "cat", "/app/version", "/data/file"); out != "2\nprecious\n" || err != nil {
		t.Errorf("after the failed start, inside: %q %v", out, err)
	}

	// v2 again: nothing to do, nothing touched.
	fi, _ := os.Stat(s.ConfigPath("pve", 100))
	n := len(rec.changes())
	v2again := *v2
	v2again.File, v2again.VolID = "", "local:vztmpl/v2.tar.gz"
	same, err := pct.PlanUpgrade(ctx, h, 100, v2, &v2again, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !same.UpToDate {
		t.Errorf("upgrading to the template the CT runs is not up to date: %+v", same)
	}
	if _, err := pct.Upgrade(ctx, h, same); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(s.ConfigPath("pve", 100))
	if got := rec.changes()[n:]; len(got) != 0 || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("a no-op upgrade ran %q or touched the config", got)
	}

	// Refusals: not nexcage's, a system container.
	if _, err := h.Run(ctx, "pct", "create", "101", "local:vztmpl/v1.tar.gz", "--rootfs", "local-lvm:1", "--ostype", "unmanaged", "--unprivileged", "1"); err != nil {
		t.Fatal(err)
	}
	_, err = pct.PlanUpgrade(ctx, h, 101, nil, v2, pct.UpgradeOptions{})
	wantKind(t, err, pct.ErrInvalidArgument, "not created by nexcage")
	_, err = pct.PlanUpgrade(ctx, h, 101, nil, v2, pct.UpgradeOptions{Adopt: true})
	wantKind(t, err, pct.ErrInvalidArgument, "system container")

	if os.Getenv(pveoracle.Env) != "" {
		o := pveoracle.Require(t)
		argvs := append(up.Argvs(), up3.Argvs()...)
		for _, v := range pveoracle.Versions {
			for _, a := range argvs {
				if v.PVE == "9.0" && len(a) > 3 && a[3] == "--entrypoint" {
					continue // PVE 9.0 has no entrypoint key: For writes lxc.init.cmd there
				}
				o.CheckArgv(t, v, a...)
			}
		}
		// The CT was made on PVE 9.2: its volume's keepattrs=1 is 9.2's.
		f := filepath.Join(t.TempDir(), "100.conf")
		os.WriteFile(f, []byte(pct2), 0o644)
		v92, _ := pveoracle.ByPVE("9.2")
		o.CheckConf(t, v92, f)
	}
	h.Run(ctx, "pct", "stop", "100")
}

func readConf(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func confKey(conf, key string) string {
	for _, l := range strings.Split(conf, "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			return v
		}
	}
	return ""
}

// volDir is where the stand-in keeps a rootfs volume's files.
func volDir(t *testing.T, sim, value string) string {
	t.Helper()
	vol, _, _ := strings.Cut(value, ",")
	store, name, _ := strings.Cut(vol, ":")
	p, err := filepath.EvalSymlinks(filepath.Join(sim, store, name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUpgradeOnPVE90: PVE 9.0 has no entrypoint key: the entrypoint is
// a raw lxc.init.cmd line, merged like the other raw keys; a working
// directory the user set stays. The argvs pass PVE 9.0's own pct CLI and
// the upgraded config its parser.
func TestUpgradeOnPVE90(t *testing.T) {
	ctx := context.Background()
	s, h, v1, v2 := deployedApp(t, "9.0.5", "app90", "entry2.sh")
	if err := h.AppendRaw(100, "", []string{"lxc.init.cwd: /tmp"}); err != nil {
		t.Fatal(err)
	}
	// A temporary VMID taken between plan and upgrade: that container is
	// someone else's and stays, CT 100 is untouched.
	before := readConf(t, s.ConfigPath("pve", 100))
	taken, err := pct.PlanUpgrade(ctx, h, 100, v1, v2, pct.UpgradeOptions{TempVMID: 150})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(ctx, "pct", "create", "150", "local:vztmpl/v1.tar.gz", "--rootfs", "local-lvm:1", "--ostype", "unmanaged", "--unprivileged", "1"); err != nil {
		t.Fatal(err)
	}
	_, err = pct.Upgrade(ctx, h, taken)
	var ue *pct.UpgradeError
	if !errors.As(err, &ue) || !ue.Restored {
		t.Errorf("upgrade with its temporary VMID taken: %v, want a restored *UpgradeError", err)
	}
	if _, err := os.Stat(s.ConfigPath("pve", 150)); err != nil || readConf(t, s.ConfigPath("pve", 100)) != before {
		t.Errorf("the failed upgrade destroyed CT 150 (%v) or changed CT 100", err)
	}

	up, err := pct.PlanUpgrade(ctx, h, 100, v1, v2, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pct.Upgrade(ctx, h, up); err != nil {
		t.Fatal(err)
	}
	after := readConf(t, s.ConfigPath("pve", 100))
	for _, l := range []string{"lxc.init.cmd: /entry2.sh", "lxc.init.cwd: /tmp", "hostname: app90"} {
		if !strings.Contains(after, l+"\n") {
			t.Errorf("the upgraded config lacks %q:\n%s", l, after)
		}
	}
	if strings.Contains(after, "entrypoint:") || strings.Contains(after, "/entry.sh") {
		t.Errorf("the upgraded config has an entrypoint key or the old one:\n%s", after)
	}
	if os.Getenv(pveoracle.Env) != "" {
		o := pveoracle.Require(t)
		v, _ := pveoracle.ByPVE("9.0")
		for _, a := range up.Argvs() {
			o.CheckArgv(t, v, a...)
		}
		f := filepath.Join(t.TempDir(), "100.conf")
		os.WriteFile(f, []byte(after), 0o644)
		o.CheckConf(t, v, f)
	}
}

// lockOnHealth plays a backup that locks the CT while its health
// command runs and ends right after the rollback's swap-back `pct set`
// was refused.
type lockOnHealth struct {
	pct.Runner
	conf string
}

func (r lockOnHealth) Run(ctx context.Context, argv []string) (string, string, int, error) {
	if len(argv) > 1 && argv[1] == "exec" {
		b, err := os.ReadFile(r.conf)
		if err != nil {
			return "", "", 0, err
		}
		if err := os.WriteFile(r.conf, []byte(strings.Replace(string(b), "\nrootfs:", "\nlock: backup\nrootfs:", 1)), 0o640); err != nil {
			return "", "", 0, err
		}
	}
	out, stderr, code, err := r.Runner.Run(ctx, argv)
	if len(argv) > 3 && argv[1] == "set" && argv[3] == "--rootfs" && (code != 0 || err != nil) {
		// The backup ends just after refusing the swap-back: a later
		// `pct set --delete unusedN` would go through.
		b, rerr := os.ReadFile(r.conf)
		if rerr == nil {
			rerr = os.WriteFile(r.conf, []byte(strings.Replace(string(b), "\nlock: backup\n", "\n", 1)), 0o640)
		}
		if rerr != nil {
			return "", "", 0, rerr
		}
	}
	return out, stderr, code, err
}

// TestUpgradeSwapBackFails: when the rollback cannot swap the old rootfs
// back (the CT got locked), unusedN still holds the old rootfs: nothing
// is deleted, the config is left naming both volumes, and the error says
// what to run.
func TestUpgradeSwapBackFails(t *testing.T) {
	ctx := context.Background()
	s, h, v1, v2 := deployedApp(t, "9.2.0", "app", "entry.sh")
	conf := s.ConfigPath("pve", 100)
	oldRootfs := confKey(readConf(t, conf), "rootfs")
	oldDir := volDir(t, s.Path("var/lib/pvesim"), oldRootfs)
	up, err := pct.PlanUpgrade(ctx, h, 100, v1, v2, pct.UpgradeOptions{HealthCmd: "false"})
	if err != nil {
		t.Fatal(err)
	}
	h.Runner = lockOnHealth{Runner: h.Runner, conf: conf}
	_, err = pct.Upgrade(ctx, h, up)
	var ue *pct.UpgradeError
	if !errors.As(err, &ue) || ue.Restored || !strings.Contains(err.Error(), "nothing was deleted") {
		t.Errorf("upgrade whose swap-back is refused: %v, want an unrestored *UpgradeError saying nothing was deleted", err)
	}
	if _, err := os.Stat(filepath.Join(oldDir, "app/version")); err != nil {
		t.Errorf("the old rootfs is gone: %v", err)
	}
	after := readConf(t, conf)
	oldVol, _, _ := strings.Cut(oldRootfs, ",")
	if !strings.Contains(after, ": "+oldVol) {
		t.Errorf("the config no longer names the old rootfs %s:\n%s", oldVol, after)
	}
	if err != nil && !strings.Contains(err.Error(), oldVol) {
		t.Errorf("the error does not name the old rootfs %s: %v", oldVol, err)
	}
}

// failAfterSwap runs the rootfs swap (`pct set VMID --rootfs NEW
// --unusedN OLD`) and then reports it failed, as a pct killed by an
// interrupt after PVE wrote the config does.
// Only the first such command (the rollback's swap-back is the second).
type failAfterSwap struct {
	pct.Runner
	fired *bool
}

func (r failAfterSwap) Run(ctx context.Context, argv []string) (string, string, int, error) {
	out, stderr, code, err := r.Runner.Run(ctx, argv)
	if !*r.fired && err == nil && code == 0 && len(argv) > 5 && argv[1] == "set" && argv[3] == "--rootfs" && strings.HasPrefix(argv[5], "--unused") {
		*r.fired = true
		return out, "interrupted\n", 1, nil
	}
	return out, stderr, code, err
}

// TestUpgradeSwapAppliedButFailed: the rootfs swap is written by PVE but
// reported failed. The rollback reads the config, sees the new rootfs in
// place, swaps the old one back and frees only the new one: the old
// rootfs and its data stay, the config is as before the upgrade. Before,
// the rollback deleted unusedN, by then the old rootfs.
func TestUpgradeSwapAppliedButFailed(t *testing.T) {
	ctx := context.Background()
	s, h, v1, v2 := deployedApp(t, "9.2.0", "app", "entry.sh")
	conf := s.ConfigPath("pve", 100)
	before := readConf(t, conf)
	oldRootfs := confKey(before, "rootfs")
	oldDir := volDir(t, s.Path("var/lib/pvesim"), oldRootfs)
	up, err := pct.PlanUpgrade(ctx, h, 100, v1, v2, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.Runner = failAfterSwap{Runner: h.Runner, fired: new(bool)}
	_, err = pct.Upgrade(ctx, h, up)
	var ue *pct.UpgradeError
	if !errors.As(err, &ue) || !ue.Restored {
		t.Errorf("upgrade whose swap is applied but reported failed: %v, want a restored *UpgradeError", err)
	}
	if b, err := os.ReadFile(filepath.Join(oldDir, "app/version")); err != nil || string(b) != "1\n" {
		t.Errorf("the old rootfs's app/version: %q, %v; want v1's", b, err)
	}
	if after := readConf(t, conf); after != before {
		t.Errorf("the config is not as before:\n%s\nwant:\n%s", after, before)
	}
}

// TestUpgradeReplacesEncodedMarker: the marker as PVE writes it into the
// config file (percent-encoded: "#nexcage%3A template=local%3A...") is
// replaced by the new one, written the same way: one marker stays.
// Before, the encoded line was not recognised and every upgrade added
// another marker.
func TestUpgradeReplacesEncodedMarker(t *testing.T) {
	ctx := context.Background()
	s, h, v1, v2 := deployedApp(t, "9.2.0", "app", "entry.sh")
	conf := s.ConfigPath("pve", 100)
	var lines []string
	for _, l := range strings.Split(readConf(t, conf), "\n") {
		if d, ok := strings.CutPrefix(l, "#"); ok {
			l = "#" + lxc.EncodeText(lxc.DecodeText(d))
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")), 0o640); err != nil {
		t.Fatal(err)
	}
	up, err := pct.PlanUpgrade(ctx, h, 100, v1, v2, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pct.Upgrade(ctx, h, up); err != nil {
		t.Fatal(err)
	}
	after := readConf(t, conf)
	want := "#" + lxc.EncodeText("nexcage: template=local:vztmpl/v2.tar.gz image=registry.example/app:v2 digest=sha256:2222") + "\n"
	if n := strings.Count(after, "#nexcage"); n != 1 || !strings.Contains(after, want) {
		t.Errorf("after the upgrade the config has %d markers, want only %q:\n%s", n, want, after)
	}
}
