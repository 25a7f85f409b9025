package pvetest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
)

// volumeDir is where the stand-in keeps a volume's files.
func volumeDir(t *testing.T, s *pvetest.StandIn, volid string) string {
	t.Helper()
	p := strings.TrimSpace(ok(t, s, "pvesm", "path", volid))
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return real
}

func configValue(t *testing.T, s *pvetest.StandIn, vmid int, key string) string {
	t.Helper()
	for _, l := range strings.Split(readConfig(t, s, "pve", vmid), "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			return v
		}
	}
	return ""
}

// upgradeArgvs are the rootfs swap of docs/proxmox.md §8 for CT 100 and
// the temporary CT 9000, as the stand-in runs them below.
var upgradeArgvs = [][]string{
	{"pct", "create", "9000", "local:vztmpl/alpine.tar.gz", "--rootfs", "local-lvm:1", "--unprivileged", "1", "--hostname", "nexcage-upgrade-100"},
	{"pct", "move-volume", "9000", "rootfs", "local-lvm"},
	{"pct", "move-volume", "9000", "unused0", "--target-vmid", "100", "--target-volume", "unused0"},
	{"pct", "destroy", "9000", "--purge"},
}

// TestStandInRootfsSwap: the stand-in does PVE's move-volume (a copy to a
// storage keeping the original as unusedN; a reassignment to another CT,
// refused for rootfs), and a CT runs on whatever volume its rootfs names,
// so a rootfs unpacked in a temporary CT can become another CT's while
// its mount point and its data stay.
func TestStandInRootfsSwap(t *testing.T) {
	s := pvetest.NewStandIn(t)
	tpl := alpineTemplate(t, s)
	ok(t, s, "pct", "create", "100", tpl, "--rootfs", "local-lvm:1", "--mp0", "local-lvm:1,mp=/data", "--unprivileged", "1", "--hostname", "app")
	oldRoot := parseVol(configValue(t, s, 100, "rootfs"))
	data := parseVol(configValue(t, s, 100, "mp0"))
	if err := os.WriteFile(filepath.Join(volumeDir(t, s, data), "kept"), []byte("data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(volumeDir(t, s, oldRoot), "etc/which"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range upgradeArgvs[:3] {
		ok(t, s, a[0], a[1:]...)
	}
	if v := configValue(t, s, 9000, "unused0"); v != "" {
		t.Errorf("CT 9000 still has unused0 %s after the reassignment", v)
	}
	fails(t, s, "Cannot move to/from 'rootfs'\n", "pct", "move-volume", "9000", "rootfs", "--target-vmid", "100", "--target-volume", "mp1")
	fails(t, s, "Moving an unused volume to a used one is not possible\n", "pct", "move-volume", "100", "unused0", "--target-vmid", "100", "--target-volume", "mp1")
	fails(t, s, "cannot move volume 'unused0', only configured volumes can be moved to another storage\n", "pct", "move-volume", "100", "unused0", "local-lvm")
	ok(t, s, upgradeArgvs[3][0], upgradeArgvs[3][1:]...)
	newRoot := configValue(t, s, 100, "unused0")
	if !strings.HasPrefix(newRoot, "local-lvm:vm-100-disk-") || newRoot == oldRoot {
		t.Fatalf("CT 100's unused0 = %q, want a volume renamed to CT 100", newRoot)
	}
	if err := os.WriteFile(filepath.Join(volumeDir(t, s, newRoot), "etc/which"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	before := readConfig(t, s, "pve", 100)
	ok(t, s, "pct", "set", "100", "--rootfs", newRoot+",size=1G", "--unused0", oldRoot)
	after := readConfig(t, s, "pve", 100)
	if configValue(t, s, 100, "mp0") != parseMPLine(before, "mp0") || !strings.Contains(after, "unused0: "+oldRoot+"\n") || strings.Count(after, oldRoot) != 1 {
		t.Errorf("after the swap:\n%s\nbefore:\n%s", after, before)
	}
	ok(t, s, "pct", "start", "100")
	if out := ok(t, s, "pct", "exec", "100", "--", "cat", "/etc/which", "/data/kept"); out != "new\ndata\n" {
		t.Errorf("inside CT 100 after the swap: %q, want the new rootfs and the kept data", out)
	}
	ok(t, s, "pct", "stop", "100")
	// Back again, then the unused (new) rootfs freed.
	ok(t, s, "pct", "set", "100", "--rootfs", oldRoot+",size=1G", "--unused0", newRoot)
	ok(t, s, "pct", "set", "100", "--delete", "unused0")
	if exists(volumeDir(t, s, oldRoot)+"/etc/which") == false || exists(filepath.Join(s.Path("var/lib/pvesim/local-lvm"), strings.TrimPrefix(newRoot, "local-lvm:"))) {
		t.Errorf("after the swap back and --delete unused0: the old rootfs must be there, %s gone", newRoot)
	}
	ok(t, s, "pct", "start", "100")
	if out := ok(t, s, "pct", "exec", "100", "--", "cat", "/etc/which", "/data/kept"); out != "old\ndata\n" {
		t.Errorf("inside CT 100 after the swap back: %q", out)
	}
	ok(t, s, "pct", "stop", "100")
}

func parseVol(v string) string { vol, _, _ := strings.Cut(v, ","); return vol }

func parseMPLine(conf, key string) string {
	for _, l := range strings.Split(conf, "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			return v
		}
	}
	return ""
}

// TestRootfsSwapArgvsPassPVE: every command of the swap, and those of the
// swap back, as Proxmox's own pct CLI of 9.0, 9.1 and 9.2 parses them.
func TestRootfsSwapArgvsPassPVE(t *testing.T) {
	o := pveoracle.Require(t)
	argvs := append(append([][]string(nil), upgradeArgvs...),
		[]string{"pct", "shutdown", "100"},
		[]string{"pct", "set", "100", "--rootfs", "local-lvm:vm-100-disk-2,size=1G", "--unused0", "local-lvm:vm-100-disk-0"},
		[]string{"pct", "start", "100"},
		[]string{"pct", "exec", "100", "--", "sh", "-c", "true"},
		[]string{"pct", "stop", "100"},
		[]string{"pct", "set", "100", "--delete", "unused0"},
	)
	for _, v := range pveoracle.Versions {
		for _, a := range argvs {
			o.CheckArgv(t, v, a...)
		}
	}
}
