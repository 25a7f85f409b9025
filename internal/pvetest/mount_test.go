package pvetest_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestStandInMount: pct mount and pct unmount as PVE::CLI::pct does them.
// mount sets the 'mounted' lock and mounts the rootfs at
// /var/lib/lxc/VMID/rootfs with each mount point inside (a missing
// directory made); a locked CT is refused; unmount unmounts everything
// and removes the lock. A mount point whose path is a symlink in the
// rootfs fails with PVE's "symlink encountered at", nothing left mounted
// and the lock kept, which unmount removes. A read-only mount point is
// mounted read-only. A hand-written config whose mp path has ".." (which
// pct set refuses) fails with PVE's "illegal character sequences",
// nothing made or mounted outside the rootfs.
func TestStandInMount(t *testing.T) {
	testenv.RequireRoot(t)
	s := pvetest.NewStandIn(t)
	tpl := alpineTemplate(t, s)
	ok(t, s, "pct", "create", "100", tpl, "--rootfs", "local-lvm:1", "--unprivileged", "1")
	ok(t, s, "pct", "set", "100", "--mp0", "local-lvm:1,mp=/data/sub")
	ok(t, s, "pct", "set", "100", "--mp2", "local-lvm:1,mp=/ro,ro=1")
	root := s.Path("var/lib/lxc/100/rootfs")
	if out := ok(t, s, "pct", "mount", "100"); out != "mounted CT 100 in '/var/lib/lxc/100/rootfs'\n" {
		t.Errorf("pct mount printed %q", out)
	}
	if !hasLine(readConfig(t, s, "pve", 100), "lock: mounted") {
		t.Errorf("no 'mounted' lock:\n%s", readConfig(t, s, "pve", 100))
	}
	if err := os.WriteFile(filepath.Join(root, "data/sub/f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Path("var/lib/pvesim/local-lvm/vm-100-disk-1"), "f")); err != nil {
		t.Errorf("a file written at the mount point is not in the volume: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "ro/f"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing into the ro=1 mount point: %v, want EROFS", err)
	}
	fails(t, s, "CT is locked (mounted)\n", "pct", "mount", "100")
	ok(t, s, "pct", "unmount", "100")
	if _, err := os.Stat(filepath.Join(root, "data/sub/f")); !os.IsNotExist(err) {
		t.Errorf("the volume is still mounted after pct unmount (%v)", err)
	}
	if strings.Contains(readConfig(t, s, "pve", 100), "lock:") {
		t.Errorf("the lock is still there:\n%s", readConfig(t, s, "pve", 100))
	}
	fails(t, s, "no lock found trying to remove 'mounted' lock\n", "pct", "unmount", "100")

	mustSymlink(t, "/etc", filepath.Join(root, "evil"))
	ok(t, s, "pct", "set", "100", "--mp1", "local-lvm:1,mp=/evil/x")
	fails(t, s, "mounting container failed\nsymlink encountered at: "+root+"/evil\n", "pct", "mount", "100")
	if _, err := os.Stat(filepath.Join(root, "data/sub/f")); !os.IsNotExist(err) {
		t.Errorf("mp0 stayed mounted after the failed mount (%v)", err)
	}
	if _, err := os.Stat("/etc/x"); !os.IsNotExist(err) {
		t.Errorf("/etc/x exists on the host (%v)", err)
	}
	ok(t, s, "pct", "unmount", "100")

	ok(t, s, "pct", "set", "100", "--delete", "mp1")
	f, err := os.OpenFile(s.ConfigPath("pve", 100), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("mp3: " + t.TempDir() + ",mp=/../../../escape\n")
	f.Close()
	fails(t, s, "mounting container failed\n/../../../escape contains illegal character sequences\n", "pct", "mount", "100")
	if _, err := os.Stat(s.Path("var/lib/escape")); !os.IsNotExist(err) {
		t.Errorf("the walk left the rootfs: var/lib/escape exists (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(root, "data/sub/f")); !os.IsNotExist(err) {
		t.Errorf("mp0 stayed mounted after the failed mount (%v)", err)
	}
	ok(t, s, "pct", "unmount", "100")
	ok(t, s, "pct", "destroy", "100")
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestStandInStartUnderLock: vm_start and vm_stop skip check_lock for the
// 'mounted' lock `pct mount` sets, and for --skiplock (the same in
// pve-container 6.0.9, 6.0.18 and 6.1.10); any other lock refuses them.
// Before, the stand-in refused to start a mounted CT.
func TestStandInStartUnderLock(t *testing.T) {
	testenv.RequireRoot(t)
	s := pvetest.NewStandIn(t)
	tpl := alpineTemplate(t, s)
	ok(t, s, "pct", "create", "100", tpl, "--rootfs", "local-lvm:1", "--unprivileged", "1")
	ok(t, s, "pct", "mount", "100")
	ok(t, s, "pct", "start", "100")
	if out := ok(t, s, "pct", "status", "100"); out != "status: running\n" {
		t.Errorf("the mounted CT did not start: %q", out)
	}
	ok(t, s, "pct", "stop", "100")
	ok(t, s, "pct", "unmount", "100")

	appendConfig(t, s, 100, "lock: backup\n")
	fails(t, s, "CT is locked (backup)\n", "pct", "start", "100")
	ok(t, s, "pct", "start", "100", "--skiplock")
	fails(t, s, "CT is locked (backup)\n", "pct", "stop", "100")
	ok(t, s, "pct", "stop", "100", "--skiplock")
	if out := ok(t, s, "pct", "status", "100"); out != "status: stopped\n" {
		t.Errorf("pct stop --skiplock left it %q", out)
	}
}
