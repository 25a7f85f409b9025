package pct

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/healthtest"
	"github.com/nexcage/nexcage/internal/pvetest"
)

// hostFiles writes subuid, subgid and a /proc with the given contents
// ("" leaves a file out).
func hostFiles(t *testing.T, subid, maxNS, usernsClone string) HostPaths {
	t.Helper()
	dir := t.TempDir()
	p := HostPaths{Subuid: filepath.Join(dir, "subuid"), Subgid: filepath.Join(dir, "subgid"), Proc: filepath.Join(dir, "proc")}
	if subid != "" {
		os.WriteFile(p.Subuid, []byte(subid), 0o644)
		os.WriteFile(p.Subgid, []byte(subid), 0o644)
	}
	os.MkdirAll(filepath.Join(p.Proc, "sys/user"), 0o755)
	os.MkdirAll(filepath.Join(p.Proc, "sys/kernel"), 0o755)
	if maxNS != "" {
		os.WriteFile(filepath.Join(p.Proc, "sys/user/max_user_namespaces"), []byte(maxNS+"\n"), 0o644)
	}
	if usernsClone != "" {
		os.WriteFile(filepath.Join(p.Proc, "sys/kernel/unprivileged_userns_clone"), []byte(usernsClone+"\n"), 0o644)
	}
	return p
}

// Off a Proxmox host: deploy is unavailable (a warning), and id ranges and
// user namespaces only warn.
func TestCheckHostOffPVE(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	res := NewHost("").CheckHost(context.Background(), hostFiles(t, "", "0", ""))
	healthtest.Want(t, res, "PVE tools", health.Warn, "not a Proxmox host: deploy unavailable")
	healthtest.Want(t, res, "give root 100000:65536", health.Warn, "does not exist (this matters only on a Proxmox host)")
	healthtest.Want(t, res, "kernel user namespaces", health.Warn, "max_user_namespaces is 0")
	for _, r := range res {
		if r.Status == health.Fail {
			t.Errorf("off PVE nothing fails: %+v", r)
		}
	}
}

func TestCheckIDRanges(t *testing.T) {
	for _, tc := range []struct {
		name, subid string
		pve         bool
		status      string
		cause       string
	}{
		{"pve default", "root:100000:65536\n", true, health.OK, ""},
		{"uid 0, larger range", "alice:165536:65536\n0:90000:200000\n", true, health.OK, ""},
		{"too small", "root:100000:1000\n", true, health.Fail, "gives root 100000:1000, which does not cover 100000:65536"},
		{"elsewhere", "root:200000:65536\n", false, health.Warn, "gives root 200000:65536"},
		{"none for root", "alice:100000:65536\n", true, health.Fail, "gives root none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := checkIDRanges(hostFiles(t, tc.subid, "1", "").orDefault(), tc.pve)
			r := healthtest.Want(t, res, "give root 100000:65536", tc.status, tc.cause)
			if tc.status != health.OK && !strings.Contains(r.Fix, "add the line root:100000:65536") {
				t.Errorf("fix: %s", r.Fix)
			}
		})
	}
}

func TestCheckUserNamespaces(t *testing.T) {
	r := checkUserNamespaces(hostFiles(t, "", "15000", "0").orDefault(), true)
	if r.Status != health.OK || !strings.Contains(r.Check, "up to 15000; only root may create them") {
		t.Errorf("%+v", r)
	}
	r = checkUserNamespaces(hostFiles(t, "", "0", "").orDefault(), true)
	if r.Status != health.Fail || !strings.Contains(r.Fix, "sysctl -w user.max_user_namespaces") {
		t.Errorf("%+v", r)
	}
	r = checkUserNamespaces(hostFiles(t, "", "", "").orDefault(), true)
	if r.Status != health.Fail || !strings.Contains(r.Cause, "no user namespaces") {
		t.Errorf("%+v", r)
	}
}

func TestCheckHostPVE(t *testing.T) {
	s := pvetest.NewStandInHost(t)
	paths := hostFiles(t, "root:100000:65536\n", "15000", "")
	res := NewHost(s.Root).CheckHost(context.Background(), paths)
	healthtest.Want(t, res, "PVE tools: pct, pvesm, pvesh and pveversion in "+s.BinDir, health.OK, "")
	healthtest.Want(t, res, "Proxmox VE 9.1 (pve-container 6.0.18): application containers (entrypoint, env) supported", health.OK, "")
	healthtest.Want(t, res, "lxc.init.uid/lxc.init.gid", health.Warn, "pve-container before 6.1")

	t.Setenv("PVE_VERSION", "8.4.1")
	res = NewHost(s.Root).CheckHost(context.Background(), paths)
	healthtest.Want(t, res, "Proxmox VE 8.4 (pve-container 5.3.3): application containers", health.Warn, "PVE before 9.1")

	// On a Proxmox host a missing id range is a failure.
	res = NewHost(s.Root).CheckHost(context.Background(), hostFiles(t, "", "15000", ""))
	healthtest.Want(t, res, "give root 100000:65536", health.Fail, "does not exist")

	// Some tools but not all: a broken installation.
	partial := t.TempDir()
	os.Symlink(filepath.Join(s.BinDir, "pveversion"), filepath.Join(partial, "pveversion"))
	t.Setenv("PATH", partial)
	res = NewHost(s.Root).CheckHost(context.Background(), paths)
	healthtest.Want(t, res, "PVE tools", health.Fail, "pct, pvesm, pvesh not found in PATH (found: pveversion)")
}

// putTemplate writes a template file with a .json sidecar as deploy
// uploads it; the sidecar's sha256 is wrong when lie is set.
func putTemplate(t *testing.T, dir, name, body string, lie bool) string {
	t.Helper()
	p := filepath.Join(dir, name)
	os.WriteFile(p, []byte(body), 0o644)
	sum := sha256.Sum256([]byte(body))
	sha := hex.EncodeToString(sum[:])
	if lie {
		sha = strings.Repeat("0", 64)
	}
	base := strings.TrimSuffix(name, ".tar.zst")
	os.WriteFile(filepath.Join(dir, base+".json"), []byte(fmt.Sprintf(`{"template": {"file": %q, "sha256": %q, "size": %d}}`, name, sha, len(body))), 0o644)
	os.WriteFile(filepath.Join(dir, base+".conf"), []byte("arch: amd64\n"), 0o644)
	return p
}

func TestCheckStorage(t *testing.T) {
	s := pvetest.NewStandInHost(t)
	h := NewHost(s.Root)
	ctx := context.Background()
	dir := s.TemplateDir("local")
	check := func(opts health.Options) []health.Result {
		t.Helper()
		res, err := h.CheckStorage(ctx, "local", opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	putTemplate(t, dir, "good.tar.zst", "a template", false)
	os.WriteFile(filepath.Join(dir, "debian-12-standard_12.7-1_amd64.tar.zst"), []byte("not ours"), 0o644)
	res := check(health.Options{})
	healthtest.Want(t, res, "template good.tar.zst matches its sidecar", health.OK, "")
	healthtest.Want(t, res, "1 template(s) built by nexcage checked, 1 other(s) without a sidecar not checked", health.OK, "")
	healthtest.Want(t, res, "no partial uploads", health.OK, "")

	// A sidecar with a wrong sha256.
	putTemplate(t, dir, "bad.tar.zst", "another template", true)
	res = check(health.Options{Repair: true})
	r := healthtest.Want(t, res, "template bad.tar.zst matches its sidecar", health.Fail, "the sidecar says "+strings.Repeat("0", 64))
	if r.Remedy != health.Redeploy || !strings.Contains(r.Fix, "upload it again") {
		t.Errorf("fix: %s", r.Fix)
	}
	os.Remove(filepath.Join(dir, "bad.tar.zst"))

	// bad.tar.zst's sidecars are now without their template; plus a
	// partial upload, and one still being written.
	partial, err := atomicfile.Create(filepath.Join(dir, "big.tar.zst"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	partial.WriteString("12345")
	partial.File.Close()
	live, err := atomicfile.Create(filepath.Join(dir, "live.tar.zst"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	res = check(health.Options{})
	healthtest.Want(t, res, "partial upload "+filepath.Base(partial.Name()), health.Warn, "5 bytes of an interrupted upload")
	healthtest.Want(t, res, "sidecar bad.json", health.Warn, "its template bad.tar.zst is not in the storage")

	inUse := func(p string) bool { return p == live.Name() }
	res = check(health.Options{Repair: true, InUse: inUse})
	if r := healthtest.Find(t, res, "partial upload "+filepath.Base(partial.Name())); !r.Repaired {
		t.Errorf("not repaired: %+v", r)
	}
	if r := healthtest.Find(t, res, "partial upload "+filepath.Base(live.Name())); r.Repaired || r.Status != health.OK || !strings.Contains(r.Check, "left alone") {
		t.Errorf("in use: %+v", r)
	}
	if r := healthtest.Find(t, res, "sidecar bad.json"); !r.Repaired || r.Fix != "removed bad.json and bad.conf" {
		t.Errorf("orphan: %+v", r)
	}
	for _, gone := range []string{partial.Name(), filepath.Join(dir, "bad.json"), filepath.Join(dir, "bad.conf")} {
		if _, err := os.Stat(gone); err == nil {
			t.Errorf("%s is still there", gone)
		}
	}
	if _, err := os.Stat(live.Name()); err != nil {
		t.Error("an upload in progress was removed")
	}
	if _, err := os.Stat(filepath.Join(dir, "good.json")); err != nil {
		t.Error("a good template's sidecar was removed")
	}
}

func TestCheckStorageKinds(t *testing.T) {
	s := pvetest.NewStandInHost(t)
	h := NewHost(s.Root)
	for _, tc := range []struct{ id, status, check, cause string }{
		{"local-lvm", health.OK, "storage local-lvm holds no templates (content rootdir,images)", ""},
		{"offline", health.Warn, "storage offline", "the storage is disabled"},
		{"nope", health.Fail, "storage nope", "storage 'nope' does not exist"},
	} {
		res, err := h.CheckStorage(context.Background(), tc.id, health.Options{})
		if err != nil {
			t.Fatal(err)
		}
		healthtest.Want(t, res, tc.check, tc.status, tc.cause)
	}
	ids, err := h.StorageIDs(context.Background())
	if err != nil || !strings.Contains(strings.Join(ids, ","), "local,local-lvm") {
		t.Errorf("storage ids %v, %v", ids, err)
	}
}
