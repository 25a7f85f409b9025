package pct_test

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/pveoracle"
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
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "lxc-start")
	ctx := context.Background()
	s, h, _ := deployHost(t)
	dir := t.TempDir()
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
// symlink names keeps its owner and mode.
func TestVolumeOwnerSymlinkImage(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "lxc-start")
	ctx := context.Background()
	s, h, _ := deployHost(t)
	t.Setenv("PVE_VERSION", "9.1.1")
	dir := t.TempDir()
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
			for _, p := range []string{victim, filepath.Join(victim, "data")} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm() != 0o700 {
					t.Errorf("host directory %s is now %d:%d %v, want 0:0 0700", p, st.Uid, st.Gid, fi.Mode().Perm())
				}
			}
		})
	}
}
