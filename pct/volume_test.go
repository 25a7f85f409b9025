package pct_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// TestVolumeOwnedAsInImage: an application running as uid 1000, whose
// image has its VOLUME /data owned by 1000 with mode 0750, can write its
// volume after a deploy on every PVE: on 9.2 through PVE's keepattrs=1,
// on 9.0 and 9.1 (no keepattrs) through pct mount, the volume's root
// chowned and chmodded from /data in the rootfs, and pct unmount. The
// volume's root is 101000:101000 0750 (the image's owner shifted by the
// CT's idmap). Before, on 9.0 and 9.1 the plan only warned and the
// application's write failed. Every argv passes that PVE's own pct CLI.
func TestVolumeOwnedAsInImage(t *testing.T) {
	ctx := context.Background()
	s, h, _, dir := lxcHost(t)
	for i, pve := range []string{"9.0.0", "9.1.1", "9.2.0"} {
		t.Run(pve, func(t *testing.T) {
			t.Setenv("PVE_VERSION", pve)
			vmid := 100 + i
			name := "v" + strconv.Itoa(vmid)
			c := lxc.Config{Entrypoint: "/entry.sh"}
			entry := "#!/bin/sh\necho 'app:x:1000:1000:app:/:/bin/sh' >> /etc/passwd\n/bin/su -s /bin/sh -c '/usr/bin/id -u > /data/by-app' app\ntrap 'exit 0' TERM\nwhile true; do sleep 1; done\n"
			if pve == "9.2.0" {
				entry = "#!/bin/sh\n/usr/bin/id -u > /data/by-app\ntrap 'exit 0' TERM\nwhile true; do sleep 1; done\n"
				c.Raw = []lxc.Option{{Key: "lxc.init.uid", Value: "1000"}, {Key: "lxc.init.gid", Value: "1000"}}
			}
			v := appTemplateDirs(t, dir, name, "sha256:"+name, map[string]string{"entry.sh": entry},
				[]tar.Header{{Name: "data", Uid: 1000, Gid: 1000, Mode: 0o750}}, c)
			p, err := pct.MakePlan(ctx, h, v, pct.Options{VMID: vmid, Hostname: "app", VolumeSize: 1, RootfsSize: 1, Start: true})
			if err != nil {
				t.Fatal(err)
			}
			cmds := strings.Join(p.Commands(), "\n")
			mounts := strings.Contains(cmds, "\npct mount "+strconv.Itoa(vmid)+"\n") && strings.Contains(cmds, "\npct unmount "+strconv.Itoa(vmid)+"\n")
			keep := strings.Contains(strings.Join(p.Set, " "), "keepattrs=1")
			if want := pve != "9.2.0"; mounts != want || keep == want || len(p.Warnings) != 0 {
				t.Errorf("PVE %s plan: pct mount/unmount %v, keepattrs %v, warnings %q; want pct mount %v and no warning:\n%s", pve, mounts, keep, p.Warnings, want, cmds)
			}
			if _, err := pct.Deploy(ctx, h, p); err != nil {
				t.Fatal(err)
			}
			defer h.Run(ctx, "pct", "stop", strconv.Itoa(vmid))
			conf := readConf(t, s.ConfigPath("pve", vmid))
			if confKey(conf, "lock") != "" {
				t.Errorf("the CT is left locked:\n%s", conf)
			}
			wantOwnedAsImage(t, volDir(t, s.Path("var/lib/pvesim"), confKey(conf, "mp0")), "by-app")
			if o := os.Getenv(pveoracle.Env); o != "" {
				v, _ := pveoracle.ByPVE(pve[:3])
				for _, a := range p.Argvs() {
					pveoracle.Require(t).CheckArgv(t, v, a...)
				}
			}
		})
	}
}

// wantOwnedAsImage waits for the application (uid 1000) to write file
// into its volume vol, and checks the volume's root is the image's
// 1000:1000 0750 shifted by the CT's idmap.
func wantOwnedAsImage(t *testing.T, vol, file string) {
	t.Helper()
	var got []byte
	var err error
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if got, err = os.ReadFile(filepath.Join(vol, file)); err == nil && len(got) > 0 {
			break
		}
	}
	if string(got) != "1000\n" {
		t.Errorf("the application (uid 1000) wrote %q into its volume (%v), want its uid", got, err)
	}
	fi, err := os.Stat(vol)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 101000 || st.Gid != 101000 || fi.Mode().Perm() != 0o750 {
		t.Errorf("the volume's root is %d:%d %v, want 101000:101000 0750 (the image's 1000:1000 0750, shifted)", st.Uid, st.Gid, fi.Mode().Perm())
	}
}

// TestVolumeOwnerSymlinkImage: an image whose VOLUME path is a symlink
// out of the rootfs (to a host directory, absolute or through "..") on
// PVE 9.1, where nexcage chowns the volume itself: the deploy fails at
// pct mount (PVE refuses a symlink on a mount point's path), the CT is
// destroyed, no volume is left, no lock, and the host directory the
// symlink names keeps its owner and mode. An upgrade to such an image,
// the symlink a VOLUME only it has, is rolled back the same way.
func TestVolumeOwnerSymlinkImage(t *testing.T) {
	ctx := context.Background()
	s, h, _, dir := upgradeHost(t, "9.1.1")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.MkdirAll(filepath.Join(victim, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(victim, 0o700)
	up := strings.Repeat("../", 40) + strings.TrimPrefix(victim, "/")
	for _, tc := range []struct {
		name, volume string
		link         tar.Header
	}{
		{"absolute", "/data", tar.Header{Typeflag: tar.TypeSymlink, Name: "data", Linkname: victim}},
		{"dotdot", "/x/data", tar.Header{Typeflag: tar.TypeSymlink, Name: "x", Linkname: up}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := appTemplateDirs(t, dir, "evil-"+tc.name, "sha256:evil", map[string]string{"entry.sh": entryScript}, []tar.Header{tc.link}, lxc.Config{Entrypoint: "/entry.sh"})
			v.Volumes = []string{tc.volume}
			p, err := pct.MakePlan(ctx, h, v, pct.Options{VMID: 100, Hostname: "evil", VolumeSize: 1, RootfsSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			_, err = pct.Deploy(ctx, h, p)
			if err == nil || !strings.Contains(err.Error(), "symlink") || !strings.Contains(err.Error(), "destroyed again") {
				t.Fatalf("deploy of an image whose VOLUME is a symlink: %v, want a refusal naming the symlink, the CT destroyed", err)
			}
			noCT(t, s, 100)
			victimUntouched(t, victim)
		})
	}

	// The same symlink as a VOLUME only v2 has: the upgrade is rolled
	// back with no volume left, and nothing outside the CT changed.
	t.Run("upgrade", func(t *testing.T) {
		v1 := appTemplate(t, dir, "good", "sha256:good", map[string]string{"entry.sh": entryScript}, lxc.Config{Entrypoint: "/entry.sh"})
		v2 := appTemplateDirs(t, dir, "evil-up", "sha256:evilup", map[string]string{"entry.sh": entryScript},
			[]tar.Header{{Typeflag: tar.TypeSymlink, Name: "evil", Linkname: victim}}, lxc.Config{Entrypoint: "/entry.sh"})
		v2.Volumes = []string{"/data", "/evil"}
		p, err := pct.MakePlan(ctx, h, v1, pct.Options{VMID: 100, Hostname: "app", VolumeSize: 1, RootfsSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pct.Deploy(ctx, h, p); err != nil {
			t.Fatal(err)
		}
		before := readConf(t, s.ConfigPath("pve", 100))
		vols, _ := h.Run(ctx, "pvesm", "list", "local-lvm")
		up, err := pct.PlanUpgrade(ctx, h, 100, v1, v2, pct.UpgradeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = pct.Upgrade(ctx, h, up)
		var ue *pct.UpgradeError
		if !errors.As(err, &ue) || !ue.Restored || !strings.Contains(err.Error(), "symlink") {
			t.Fatalf("upgrade to an image whose new VOLUME is a symlink: %v, want an *UpgradeError naming the symlink, restored", err)
		}
		if got := readConf(t, s.ConfigPath("pve", 100)); got != before {
			t.Errorf("after the rollback the config differs:\n%s\nwant\n%s", got, before)
		}
		if got, _ := h.Run(ctx, "pvesm", "list", "local-lvm"); got != vols {
			t.Errorf("after the rollback pvesm list differs:\n%s\nwant\n%s", got, vols)
		}
		victimUntouched(t, victim)
	})
}

// victimUntouched checks the host directory a hostile image's symlink
// names, and its data directory, kept owner 0:0 and mode 0700.
func victimUntouched(t *testing.T, victim string) {
	t.Helper()
	for _, p := range []string{victim, filepath.Join(victim, "data")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm() != 0o700 {
			t.Errorf("host directory %s is now %d:%d %v, want 0:0 0700", p, st.Uid, st.Gid, fi.Mode().Perm())
		}
	}
}

// pvesmList is `pvesm list STORAGE` on h: the volumes a storage holds.
func pvesmList(t *testing.T, h *pct.Host, storage string) string {
	t.Helper()
	out, err := h.Run(context.Background(), "pvesm", "list", storage)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUpgradeAddsNewImageVolume: v2 of an image adds a VOLUME (/cache,
// owned 1000:1000 0750 in the image). The upgrade from v1 adds a volume
// for it (mp1, on the storage and of the size of the CT's image volume),
// owned as in the image (keepattrs on 9.2, pct mount on 9.0 and 9.1), so
// the application (uid 1000) writes it; the old volume and its data stay
// as they are. A v3 adding another VOLUME whose health command fails is
// rolled back with no volume left behind: pvesm list and the config are
// as before. On PVE 9.0, 9.1 and 9.2, every argv passing that version's
// own pct CLI. Before, the upgrade made no volume for /cache.
func TestUpgradeAddsNewImageVolume(t *testing.T) {
	ctx := context.Background()
	s, h, _, dir := lxcHost(t)
	const entry = "#!/bin/sh\necho 'app:x:1000:1000:app:/:/bin/sh' >> /etc/passwd\n" +
		"/bin/su -s /bin/sh -c '/usr/bin/id -u > /data/by-app; [ -d /cache ] && /usr/bin/id -u > /cache/by-app' app\n" +
		"trap 'exit 0' TERM\nwhile true; do sleep 1; done\n"
	owned := func(p string) tar.Header { return tar.Header{Name: p, Uid: 1000, Gid: 1000, Mode: 0o750} }
	for i, pve := range []string{"9.0.0", "9.1.1", "9.2.0"} {
		t.Run(pve, func(t *testing.T) {
			t.Setenv("PVE_VERSION", pve)
			vmid := 100 + 10*i
			id := strconv.Itoa(vmid)
			tmpl := func(name string, vols ...string) *pct.Template {
				var dirs []tar.Header
				for _, v := range vols {
					dirs = append(dirs, owned(strings.TrimPrefix(v, "/")))
				}
				v := appTemplateDirs(t, dir, name+"-"+id, "sha256:"+name+id, map[string]string{"entry.sh": entry, "app/version": name}, dirs, lxc.Config{Entrypoint: "/entry.sh"})
				v.Volumes = vols
				return v
			}
			v1, v2, v3 := tmpl("v1", "/data"), tmpl("v2", "/data", "/cache"), tmpl("v3", "/data", "/cache", "/more")
			p, err := pct.MakePlan(ctx, h, v1, pct.Options{VMID: vmid, Hostname: "app", VolumeSize: 1, RootfsSize: 1, Start: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pct.Deploy(ctx, h, p); err != nil {
				t.Fatal(err)
			}
			defer h.Run(ctx, "pct", "stop", id)
			before := readConf(t, s.ConfigPath("pve", vmid))
			dataVol := volDir(t, s.Path("var/lib/pvesim"), confKey(before, "mp0"))
			wantOwnedAsImage(t, dataVol, "by-app")
			if _, err := h.Run(ctx, "pct", "exec", id, "--", "sh", "-c", "echo precious > /data/file"); err != nil {
				t.Fatal(err)
			}

			up, err := pct.PlanUpgrade(ctx, h, vmid, v1, v2, pct.UpgradeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cmds := strings.Join(up.Commands(), "\n")
			set := "pct set " + id + " --mp1 local-lvm:1,mp=/cache"
			if pve == "9.2.0" {
				set += ",keepattrs=1"
			}
			mounts := strings.Contains(cmds, "\npct mount "+id+"\n")
			if len(up.NewVolumes) != 1 || up.NewVolumes[0] != "/cache" || !strings.Contains(cmds, set+"\n") || mounts != (pve != "9.2.0") || len(up.Warnings) != 0 {
				t.Errorf("the plan: new volumes %q, warnings %q, want /cache made by %q (pct mount %v):\n%s", up.NewVolumes, up.Warnings, set, pve != "9.2.0", cmds)
			}
			if _, err := pct.Upgrade(ctx, h, up); err != nil {
				t.Fatal(err)
			}
			after := readConf(t, s.ConfigPath("pve", vmid))
			if confKey(after, "mp0") != confKey(before, "mp0") || !strings.Contains(confKey(after, "mp1"), "mp=/cache") || confKey(after, "lock") != "" {
				t.Errorf("after the upgrade: mp0 %q (was %q), mp1 %q, lock %q", confKey(after, "mp0"), confKey(before, "mp0"), confKey(after, "mp1"), confKey(after, "lock"))
			}
			wantOwnedAsImage(t, volDir(t, s.Path("var/lib/pvesim"), confKey(after, "mp1")), "by-app")
			if out, err := h.Run(ctx, "pct", "exec", id, "--", "cat", "/data/file", "/app/version"); out != "precious\nv2" || err != nil {
				t.Errorf("inside the upgraded CT: %q %v, want the old volume's data and v2", out, err)
			}

			// v3 adds /more and fails its health command: back to v2.
			vols := func() string { return pvesmList(t, h, "local-lvm") }
			volsBefore := vols()
			up3, err := pct.PlanUpgrade(ctx, h, vmid, v2, v3, pct.UpgradeOptions{HealthCmd: "false"})
			if err != nil {
				t.Fatal(err)
			}
			if len(up3.NewVolumes) != 1 || up3.NewVolumes[0] != "/more" {
				t.Errorf("v3's new volumes: %q, want /more", up3.NewVolumes)
			}
			_, err = pct.Upgrade(ctx, h, up3)
			var ue *pct.UpgradeError
			if !errors.As(err, &ue) || !ue.Restored {
				t.Fatalf("v3: %v, want an *UpgradeError, restored", err)
			}
			if got := readConf(t, s.ConfigPath("pve", vmid)); got != after {
				t.Errorf("after the rollback the config differs:\n%s\nwant\n%s", got, after)
			}
			if got := vols(); got != volsBefore {
				t.Errorf("after the rollback pvesm list differs:\n%s\nwant\n%s", got, volsBefore)
			}
			if o := os.Getenv(pveoracle.Env); o != "" {
				v, _ := pveoracle.ByPVE(pve[:3])
				for _, a := range append(up.Argvs(), up3.Argvs()...) {
					if v.PVE == "9.0" && len(a) > 3 && a[3] == "--entrypoint" {
						continue // PVE 9.0 has no entrypoint key
					}
					pveoracle.Require(t).CheckArgv(t, v, a...)
				}
			}
		})
	}
}

// TestUpgradeNewVolumeBesideBind: PVE keeps a mount point's path as
// written and mounts by key, not path. A new image VOLUME at the path of
// an admin's bind mount written `/srv/` is that mount (no volume added:
// before, one was planned under it and pct mount chowned the host
// directory bound on top); a new VOLUME below or above a bind mount is
// refused, so no directory is made in the host directory and no volume
// hides it.
func TestUpgradeNewVolumeBesideBind(t *testing.T) {
	ctx := context.Background()
	s, h, v1, v2 := deployedApp(t, "9.1.1", "app", "entry.sh")
	for k, dir := range map[string]string{"--mp5": t.TempDir() + ",mp=/srv/", "--mp6": t.TempDir() + ",mp=/opt/bind"} {
		if _, err := h.Run(ctx, "pct", "set", "100", k, dir); err != nil {
			t.Fatal(err)
		}
	}
	if c := readConf(t, s.ConfigPath("pve", 100)); !strings.Contains(c, "mp=/srv/\n") {
		t.Fatalf("the stand-in did not keep mp=/srv/ as written:\n%s", c)
	}
	with := func(vols ...string) *pct.Template {
		v := *v2
		v.Volumes = append([]string{"/data"}, vols...)
		return &v
	}
	up, err := pct.PlanUpgrade(ctx, h, 100, v1, with("/srv"), pct.UpgradeOptions{})
	if err != nil || len(up.NewVolumes) != 0 {
		t.Errorf("a VOLUME /srv beside the bind at /srv/: %v, new volumes %q; want none", err, upNew(up))
	}
	for _, vol := range []string{"/srv/sub", "/opt", "/opt/bind/x"} {
		up, err := pct.PlanUpgrade(ctx, h, 100, v1, with(vol), pct.UpgradeOptions{})
		if !errors.Is(err, pct.ErrInvalidArgument) || !strings.Contains(fmt.Sprint(err), "bind mount") {
			t.Errorf("a new VOLUME %s nested with a bind mount: %v, new volumes %q; want a refusal", vol, err, upNew(up))
		}
	}
}

func upNew(up *pct.UpgradePlan) []string {
	if up == nil {
		return nil
	}
	return up.NewVolumes
}

// ownedVolumePlan plans the deploy of CT 100 on PVE 9.1 from an image
// whose VOLUME /data is owned by 1000:1000, which pct mount gives the
// volume.
func ownedVolumePlan(t *testing.T, ctx context.Context, start bool) (*pvetest.StandIn, *pct.Host, *pct.Plan) {
	t.Helper()
	testenv.RequireRoot(t)
	t.Setenv("PVE_VERSION", "9.1.1")
	s, h, _ := deployHost(t)
	v := appTemplateDirs(t, t.TempDir(), "v1", "sha256:v1", map[string]string{"entry.sh": entryScript},
		[]tar.Header{{Name: "data", Uid: 1000, Gid: 1000, Mode: 0o750}}, lxc.Config{Entrypoint: "/entry.sh"})
	p, err := pct.MakePlan(ctx, h, v, pct.Options{VMID: 100, Hostname: "app", VolumeSize: 1, RootfsSize: 1, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	return s, h, p
}

// cancelAfterMount cancels the deploy's context once `pct mount` is
// done, as a Ctrl-C while the volumes are owned does.
type cancelAfterMount struct {
	pct.Runner
	cancel context.CancelFunc
}

func (r cancelAfterMount) Run(ctx context.Context, argv []string) (string, string, int, error) {
	out, stderr, code, err := r.Runner.Run(ctx, argv)
	if len(argv) > 1 && argv[0] == "pct" && argv[1] == "mount" {
		r.cancel()
	}
	return out, stderr, code, err
}

// TestDeployInterruptedWhileMounted: the deploy on PVE 9.1 is interrupted
// while the CT is mounted to own its volume: pct unmount still runs, so
// the half-made CT is destroyed and nothing is left, no CT locked
// 'mounted'. Before, pct unmount ran with the canceled context, and the
// destroy was refused by the lock.
func TestDeployInterruptedWhileMounted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, h, p := ownedVolumePlan(t, ctx, true)
	h.Runner = cancelAfterMount{Runner: h.Runner, cancel: cancel}
	_, err := pct.Deploy(ctx, h, p)
	if err == nil || !strings.Contains(err.Error(), "was destroyed again") {
		t.Errorf("interrupted deploy: %v, want the half-made CT destroyed", err)
	}
	if b, err := os.ReadFile(s.ConfigPath("pve", 100)); err == nil {
		t.Errorf("CT 100 is left:\n%s", b)
	}
}

// lockBeforeMount plays an admin's `pct mount` just before nexcage's:
// the CT is locked 'mounted' by someone else. It records every argv.
type lockBeforeMount struct {
	pct.Runner
	conf string
	seen *[]string
}

func (r lockBeforeMount) Run(ctx context.Context, argv []string) (string, string, int, error) {
	*r.seen = append(*r.seen, strings.Join(argv, " "))
	if len(argv) > 1 && argv[0] == "pct" && argv[1] == "mount" {
		b, err := os.ReadFile(r.conf)
		if err == nil {
			err = os.WriteFile(r.conf, []byte(strings.Replace(string(b), "\nrootfs:", "\nlock: mounted\nrootfs:", 1)), 0o640)
		}
		if err != nil {
			return "", "", 0, err
		}
	}
	return r.Runner.Run(ctx, argv)
}

// TestOwnVolumesLeavesOthersLock: when pct mount is refused because
// someone else holds the CT's 'mounted' lock, nexcage runs no pct
// unmount (which would unmount their mounts and remove their lock), in
// the step or in the deploy's undo: the lock stays. Before, the deferred
// pct unmount removed it.
func TestOwnVolumesLeavesOthersLock(t *testing.T) {
	ctx := context.Background()
	s, h, p := ownedVolumePlan(t, ctx, false)
	var seen []string
	h.Runner = lockBeforeMount{Runner: h.Runner, conf: s.ConfigPath("pve", 100), seen: &seen}
	if _, err := pct.Deploy(ctx, h, p); err == nil || !strings.Contains(err.Error(), "CT is locked") {
		t.Errorf("deploy with the CT mounted by someone else: %v, want the lock refusal", err)
	}
	if slices.Contains(seen, "pct unmount 100") {
		t.Errorf("pct unmount ran:\n%s", strings.Join(seen, "\n"))
	}
	if c := readConf(t, s.ConfigPath("pve", 100)); confKey(c, "lock") != "mounted" {
		t.Errorf("their 'mounted' lock is gone:\n%s", c)
	}
}
