package pct_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// upgradeConf is an application CT nexcage made through the API (PVE
// 9.1: entrypoint and env, no raw keys but the environment), as PVE
// writes it: the description encode_text'ed.
const upgradeConf = `#nexcage%3A template=local%3Avztmpl/app_0_amd64.tar.zst image=example.com/app%3A0 digest=sha256%3A0000
arch: amd64
entrypoint: /app/run.sh
hostname: app
memory: 512
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,host-managed=1,type=veth
ostype: unmanaged
rootfs: local-lvm:vm-100-disk-0,size=8G
unprivileged: 1
lxc.environment.runtime: GREETING=hello
`

// TestRemoteUpgradeRefusals: through the API, --health-cmd is a
// *RemoteExecError before any request; a plan whose CT's config changed
// before it ran is refused (its digest) without a change; a snapshot and
// a lock are refused as on the host. Every request PVE's schema judged.
func TestRemoteUpgradeRefusals(t *testing.T) {
	s, api, h := remoteStandIn(t)
	ctx := context.Background()
	conf := s.Path("etc/pve/nodes/pve/lxc/100.conf")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write(upgradeConf)
	tmpl := planTemplate(t, "arch: amd64\nostype: unmanaged\nentrypoint: /app/run.sh --v2\nlxc.environment.runtime: GREETING=hi\n", "/data")
	old := planTemplate(t, "arch: amd64\nostype: unmanaged\nentrypoint: /app/run.sh\nlxc.environment.runtime: GREETING=hello\n", "/data")
	changing := func(from int) []string {
		var out []string
		for _, r := range api.Requests(t)[from:] {
			if r.Method != "GET" {
				out = append(out, r.Method+" "+r.Path)
			}
		}
		return out
	}

	_, err := pct.PlanUpgrade(ctx, h, 100, nil, tmpl, pct.UpgradeOptions{HealthCmd: "true"})
	var xe *pct.RemoteExecError
	if !errors.As(err, &xe) || !errors.Is(err, pct.ErrInvalidArgument) || xe.Cmd != "true" {
		t.Fatalf("--health-cmd through the API: %v (%T), want a *RemoteExecError", err, err)
	}
	if n := len(api.Requests(t)); n != 0 {
		t.Errorf("--health-cmd through the API made %d requests before it was refused", n)
	}

	p, err := pct.PlanUpgrade(ctx, h, 100, old, tmpl, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantCommands(t, p,
		"POST /api2/json/nodes/pve/lxc vmid=101 ostemplate=local:vztmpl/app_1_amd64.tar.zst rootfs=local-lvm:8 unprivileged=1 hostname=nexcage-upgrade-100",
		"PUT /api2/json/nodes/pve/lxc/100/config rootfs=local-lvm:NEWVOL,size=8G unused0=local-lvm:vm-100-disk-0 ",
		`entrypoint="/app/run.sh --v2" env="GREETING=(not shown)" digest=DIGEST`,
	)
	mark := len(api.Requests(t))
	write(upgradeConf + "cores: 2\n")
	_, err = pct.Upgrade(ctx, h, p)
	if err == nil || !strings.Contains(err.Error(), "CT 100's config changed since the upgrade was planned") {
		t.Fatalf("a config changed after the plan: %v", err)
	}
	if ch := changing(mark); len(ch) > 0 {
		t.Errorf("a refused upgrade sent %q", ch)
	}

	for extra, want := range map[string]string{
		"lock: backup\n": "CT 100 is locked",
		"parent: snap\n\n[snap]\nhostname: app\n": "CT 100 has snapshots",
		"lxc.init.cwd: /srv\n":                    "", // the user's cwd stays: no raw write needed
	} {
		write(upgradeConf + extra)
		_, err := pct.PlanUpgrade(ctx, h, 100, old, tmpl, pct.UpgradeOptions{})
		switch {
		case want == "" && err != nil:
			t.Errorf("with %q: %v", extra, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("with %q: %v, want %q", extra, err, want)
		}
	}
	// Adopted: the marker is added to the description, every current
	// value is the user's.
	write(strings.SplitN(upgradeConf, "\n", 2)[1])
	if _, err := pct.PlanUpgrade(ctx, h, 100, nil, tmpl, pct.UpgradeOptions{}); err == nil || !strings.Contains(err.Error(), "was not created by nexcage") {
		t.Errorf("not nexcage's, without Adopt: %v", err)
	}
	ap, err := pct.PlanUpgrade(ctx, h, 100, nil, tmpl, pct.UpgradeOptions{Adopt: true})
	if err != nil {
		t.Fatal(err)
	}
	if cmds := strings.Join(ap.Commands(), "\n"); !strings.Contains(cmds, ` description="nexcage: template=local:vztmpl/app_1_amd64.tar.zst image=example.com/app:1" digest=DIGEST`) {
		t.Errorf("adopted: the swap does not add the marker, or changes more:\n%s", cmds)
	}
	// A marker line not written as nexcage writes it (two blanks) still
	// marks the CT and is replaced where it is, as on the host, so the
	// next upgrade plans from the new template.
	write(strings.Replace(upgradeConf, "#nexcage: template=", "#nexcage:  template=", 1))
	sp, err := pct.PlanUpgrade(ctx, h, 100, old, tmpl, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantCommands(t, sp, ` description="nexcage: template=local:vztmpl/app_1_amd64.tar.zst image=example.com/app:1" `)
	if ch := changing(mark); len(ch) > 0 {
		t.Errorf("plans sent %q", ch)
	}
	api.CheckJudged(t)
}

// TestRemoteUpgradeAddsNewImageVolume: on PVE 9.0, a container made on
// the host (its entrypoint a raw lxc.init.cmd line the API cannot write,
// the same in every version here) is upgraded through the API to a v2
// with a new VOLUME /cache: the plan adds it in its own config write
// (mp1=local-lvm:1,mp=/cache: PVE's update_vm allocates it) and warns that
// its root stays the container's root's (no keepattrs before 9.2, no pct
// mount over the API); the plan made only GETs. After the upgrade mp1 is a
// volume on the storage of the CT's image volume, mounted in the running
// CT, the old volume's data there. A v3 adding /more that cannot start is
// rolled back: the config as before, pvesm list as before (the new volume
// freed). Every request judged by PVE 9.0's API schema.
func TestRemoteUpgradeAddsNewImageVolume(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "lxc-start")
	pveoracle.Require(t)
	ctx := context.Background()
	s, h, _ := deployHost(t)
	t.Setenv("PVE_VERSION", "9.0.5")
	api, rh := remoteOn(t, s, "PVE_VERSION=9.0.5")
	dir := t.TempDir()
	tmpl := func(name, entry string, vols ...string) *pct.Template {
		v := appTemplate(t, dir, name, "sha256:"+name, map[string]string{"entry.sh": entry, "app/version": name}, lxc.Config{Entrypoint: "/entry.sh"})
		v.Volumes = vols
		return v
	}
	v1 := tmpl("v1", entryScript, "/data")
	v2 := tmpl("v2", entryScript, "/data", "/cache")
	v3 := tmpl("v3", "#!/bin/sh\nexit 1\n", "/data", "/cache", "/more")
	deployCT(t, h, v1, pct.Options{Hostname: "app", VolumeSize: 1, RootfsSize: 1, Start: true})
	defer h.Run(ctx, "pct", "stop", "100")
	if _, err := h.Run(ctx, "pct", "exec", "100", "--", "sh", "-c", "echo precious > /data/file"); err != nil {
		t.Fatal(err)
	}
	conf := s.ConfigPath("pve", 100)
	before := readConf(t, conf)
	changing := func(from int, want string) (found bool, other []string) {
		for _, r := range api.Requests(t)[from:] {
			if r.Method == "GET" {
				continue
			}
			other = append(other, r.Method+" "+r.Path+" "+fmt.Sprint(r.Params))
			// A delete counts only with the digest of the config it
			// was judged on.
			ps := maps.Clone(r.Params)
			delete(ps, "digest")
			if r.Method == "PUT" && strings.HasSuffix(r.Path, "/lxc/100/config") && fmt.Sprint(ps) == want && (ps["delete"] == "" || len(r.Params["digest"]) == 40) {
				found = true
			}
		}
		return found, other
	}

	mark := len(api.Requests(t))
	up, err := pct.PlanUpgrade(ctx, rh, 100, v1, v2, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cmds := "\n" + strings.Join(up.Commands(), "\n") + "\n"
	if !strings.Contains(cmds, "\nPUT /api2/json/nodes/pve/lxc/100/config mp1=local-lvm:1,mp=/cache\nPOST /api2/json/nodes/pve/lxc/100/status/start\n") || strings.Contains(cmds, "pct mount") {
		t.Errorf("the plan does not add /cache in its own PUT before the start:%s", cmds)
	}
	if w := strings.Join(up.Warnings, "\n"); !strings.Contains(w, "pve-container 6.0.9 has no keepattrs") || !strings.Contains(w, "/cache's volume belongs to the container's root") {
		t.Errorf("the plan's warnings %q do not say /cache's volume keeps PVE's owner", up.Warnings)
	}
	if _, other := changing(mark, ""); len(other) > 0 {
		t.Errorf("planning sent %q", other)
	}
	mark = len(api.Requests(t))
	if _, err := pct.Upgrade(ctx, rh, up); err != nil {
		t.Fatal(err)
	}
	if found, _ := changing(mark, "map[mp1:local-lvm:1,mp=/cache]"); !found {
		t.Error("the upgrade sent no PUT mp1=local-lvm:1,mp=/cache")
	}
	after := readConf(t, conf)
	mp1 := confKey(after, "mp1")
	if confKey(after, "mp0") != confKey(before, "mp0") || !strings.HasPrefix(mp1, "local-lvm:vm-100-disk-") || !strings.Contains(mp1, ",mp=/cache") || confKey(after, "lxc.init.cmd") != "/entry.sh" {
		t.Errorf("after the upgrade: mp0 %q (was %q), mp1 %q, lxc.init.cmd %q", confKey(after, "mp0"), confKey(before, "mp0"), mp1, confKey(after, "lxc.init.cmd"))
	}
	if out, err := h.Run(ctx, "pct", "exec", "100", "--", "sh", "-c", "cat /data/file /app/version; grep -c ' /cache ' /proc/mounts"); out != "precious\nv21\n" || err != nil {
		t.Errorf("inside the upgraded CT: %q %v, want the old volume's data, v2 and /cache mounted", out, err)
	}

	volsBefore := pvesmList(t, h, "local-lvm")
	up3, err := pct.PlanUpgrade(ctx, rh, 100, v2, v3, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mark = len(api.Requests(t))
	_, err = pct.Upgrade(ctx, rh, up3)
	var ue *pct.UpgradeError
	if !errors.As(err, &ue) || !ue.Restored {
		t.Fatalf("v3: %v, want an *UpgradeError, restored", err)
	}
	if found, _ := changing(mark, "map[mp2:local-lvm:1,mp=/more]"); !found {
		t.Error("v3 sent no PUT mp2=local-lvm:1,mp=/more")
	}
	if found, _ := changing(mark, "map[delete:mp2]"); !found {
		t.Error("v3's rollback sent no PUT delete=mp2")
	}
	if got := readConf(t, conf); got != after {
		t.Errorf("after the rollback the config differs:\n%s\nwant\n%s", got, after)
	}
	if got := pvesmList(t, h, "local-lvm"); got != volsBefore {
		t.Errorf("after the rollback pvesm list differs:\n%s\nwant\n%s", got, volsBefore)
	}
	api.CheckJudged(t)
}

// remoteUpgradeHost is a stopped CT 100 deployed on the host from v1,
// an app template, with v2 to upgrade it to through the API (served with
// opts).
func remoteUpgradeHost(t *testing.T, opts pvetest.APIOptions) (*pvetest.StandIn, *pct.Host, *pvetest.API, *pct.Host, *pct.Template, *pct.Template) {
	t.Helper()
	testenv.RequireRoot(t)
	pveoracle.Require(t)
	s, h, _ := deployHost(t)
	api, rh := remoteOnOpts(t, s, opts)
	dir := t.TempDir()
	v1 := appTemplate(t, dir, "v1", "sha256:1111", map[string]string{"entry.sh": entryScript}, lxc.Config{Entrypoint: "/entry.sh"})
	v2 := appTemplate(t, dir, "v2", "sha256:2222", map[string]string{"entry.sh": entryScript, "app/version": "2\n"}, lxc.Config{Entrypoint: "/entry.sh"})
	deployCT(t, h, v1, pct.Options{Hostname: "app", RootfsSize: 1})
	return s, h, api, rh, v1, v2
}

// cancelOnPoll cancels ctx (Ctrl-C) once the API's log, past its first
// from bytes, shows a status poll of a task whose UPID holds task: the
// POST has returned and the client waits on the task (kept "running" by
// the server's task delay). The returned func waits for the watcher.
func cancelOnPoll(api *pvetest.API, from int, task string, cancel context.CancelFunc, ctx context.Context) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if b, err := os.ReadFile(api.LogPath); err == nil && len(b) > from && bytes.Contains(b[from:], []byte(task)) {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() { cancel(); <-done }
}

// TestRemoteUpgradeInterrupted: an upgrade through the API interrupted
// (Ctrl-C) while PVE runs one of its tasks, the temporary CT's create or
// the hand-over of the new rootfs, waits for that task's end before it
// rolls back, and undoes what the task made: no temporary CT left, no
// new volume on the CT or its storage, the config as before, reported as
// put back. Every request judged by PVE's schema.
func TestRemoteUpgradeInterrupted(t *testing.T) {
	ctx := context.Background()
	s, h, api, rh, v1, v2 := remoteUpgradeHost(t, pvetest.APIOptions{TaskDelay: 2 * time.Second})
	conf := s.ConfigPath("pve", 100)
	before := readConf(t, conf)
	vols := pvesmList(t, h, "local-lvm")
	for _, tc := range []struct{ step, task string }{
		{"create", ":vzcreate:101:"},
		{"hand-over", ":move_volume:101-unused0"},
	} {
		p, err := pct.PlanUpgrade(ctx, rh, 100, v1, v2, pct.UpgradeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.TempVMID != 101 {
			t.Fatalf("%s: the temporary CT is %d, want 101", tc.step, p.TempVMID)
		}
		fi, err := os.Stat(api.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		wait := cancelOnPoll(api, int(fi.Size()), tc.task, cancel, cctx)
		_, err = pct.Upgrade(cctx, rh, p)
		wait()
		var ue *pct.UpgradeError
		if !errors.As(err, &ue) || !ue.Restored {
			t.Errorf("interrupted at the %s: %v, want an *UpgradeError, put back", tc.step, err)
		}
		if _, serr := os.Stat(s.ConfigPath("pve", 101)); serr == nil {
			t.Errorf("interrupted at the %s: the temporary CT 101 is left", tc.step)
			h.Run(ctx, "pct", "destroy", "101")
		}
		if got := readConf(t, conf); got != before {
			t.Errorf("interrupted at the %s: the config is\n%s\nwant\n%s", tc.step, got, before)
		}
		if got := pvesmList(t, h, "local-lvm"); got != vols {
			t.Errorf("interrupted at the %s: pvesm list is\n%s\nwant\n%s", tc.step, got, vols)
		}
	}
	api.CheckJudged(t)
}

// TestRemoteUpgradeFreesOnlyTheOldRootfs: the commit frees unusedN only
// while it still names the old rootfs. Here, while the upgraded CT runs
// its check, the old rootfs is moved to unused1 by hand: the upgrade
// succeeds but says the old rootfs was not freed, sends no delete of
// unused0, and the old volume is still on the storage.
func TestRemoteUpgradeFreesOnlyTheOldRootfs(t *testing.T) {
	testenv.RequireTool(t, "lxc-start")
	ctx := context.Background()
	s, h, api, rh, v1, v2 := remoteUpgradeHost(t, pvetest.APIOptions{})
	defer h.Run(ctx, "pct", "stop", "100")
	conf := s.ConfigPath("pve", 100)
	oldVol, _, _ := strings.Cut(confKey(readConf(t, conf), "rootfs"), ",")
	p, err := pct.PlanUpgrade(ctx, rh, 100, v1, v2, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(api.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	moved := make(chan error, 1)
	go func() {
		for cctx.Err() == nil {
			b, err := os.ReadFile(api.LogPath)
			if err == nil && bytes.Contains(b[fi.Size():], []byte(`"path":"/nodes/pve/lxc/100/status/start"`)) {
				text, err := os.ReadFile(conf)
				if err == nil {
					err = os.WriteFile(conf, bytes.Replace(text, []byte("\nunused0: "), []byte("\nunused1: "), 1), 0o640)
				}
				moved <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		moved <- cctx.Err()
	}()
	mark := len(api.Requests(t))
	_, err = pct.Upgrade(cctx, rh, p)
	cancel()
	if merr := <-moved; merr != nil {
		t.Fatalf("moving unused0 by hand: %v", merr)
	}
	if err == nil || !strings.Contains(err.Error(), "was not freed") || !strings.Contains(err.Error(), `unused0 is ""`) {
		t.Errorf("the old rootfs moved away from unused0: %v, want it not freed", err)
	}
	for _, r := range api.Requests(t)[mark:] {
		if r.Method == "PUT" && r.Params["delete"] == "unused0" {
			t.Errorf("the upgrade sent PUT delete=unused0 (%v) though unused0 was no longer the old rootfs", r.Params)
		}
	}
	if got := confKey(readConf(t, conf), "unused1"); got != oldVol || !strings.Contains(pvesmList(t, h, "local-lvm"), oldVol+" ") {
		t.Errorf("the old rootfs %s: unused1 %q, pvesm list\n%s", oldVol, got, pvesmList(t, h, "local-lvm"))
	}
	api.CheckJudged(t)
}
