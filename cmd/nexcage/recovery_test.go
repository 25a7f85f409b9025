package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/fstree"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
)

// nexcageRun runs the binary and returns its stdout, stderr and status.
func nexcageRun(t *testing.T, env []string, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return testenv.Output(t, cmd)
}

// nexcageOK runs the binary and fails the test unless it exits 0.
func nexcageOK(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	out, errs, code := nexcageRun(t, env, bin, args...)
	if code != 0 {
		t.Fatalf("nexcage %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// killWhen starts the binary and kills it with SIGKILL as soon as
// writing(), polled every millisecond, says its output is half-written.
func killWhen(t *testing.T, env []string, bin string, args []string, writing func() bool) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(3 * time.Minute)
	for !writing() {
		select {
		case err := <-done:
			t.Fatalf("nexcage %s ended (%v) before it could be killed mid-write:\n%s", strings.Join(args, " "), err, out.String())
		case <-deadline:
			cmd.Process.Kill()
			<-done
			t.Fatalf("nexcage %s: never started writing:\n%s", strings.Join(args, " "), out.String())
		case <-time.After(time.Millisecond):
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := <-done
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("nexcage %s was not killed (%v):\n%s", strings.Join(args, " "), err, out.String())
	}
}

// tempIn returns the first temporary name in dir that starts with
// prefix, and its size (for a directory: the number of entries below
// sub).
func tempIn(dir, prefix, sub string) (string, int64) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !atomicfile.IsTemp(e.Name()) || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			files, _ := os.ReadDir(filepath.Join(p, sub))
			return p, int64(len(files))
		}
		if fi, err := e.Info(); err == nil {
			return p, fi.Size()
		}
	}
	return "", 0
}

// checkReport runs check --json and decodes its report.
func checkJSON(t *testing.T, env []string, bin string, args ...string) checkReport {
	t.Helper()
	out, errs, _ := nexcageRun(t, env, bin, append([]string{"check", "--json"}, args...)...)
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
	}
	return rep
}

// recovers shows what the issue asks of every writer, once it was killed
// leaving leftover (a temporary name): check reports it (a warning, exit
// status 3), --repair removes it and exits 0, and check is clean again.
func recovers(t *testing.T, env []string, bin, leftover string, target ...string) {
	t.Helper()
	name := filepath.Base(leftover)
	rep := checkJSON(t, env, bin, target...)
	found := false
	for _, r := range rep.Checks {
		if strings.Contains(r.Check, name) {
			found = true
			if r.Status != "warn" || r.Repaired {
				t.Errorf("leftover %s: %+v", name, r)
			}
		}
	}
	if !found || rep.ExitStatus != exitWarnings || rep.Status != "warn" {
		t.Fatalf("check %s does not report %s as the only problem: %+v", strings.Join(target, " "), name, rep)
	}
	out := nexcageOK(t, env, bin, append([]string{"check", "--repair"}, target...)...)
	if !strings.Contains(out, name) || !strings.Contains(out, "; repaired: removed it") {
		t.Errorf("check --repair does not say it removed %s:\n%s", name, out)
	}
	if _, err := os.Lstat(leftover); err == nil {
		t.Fatalf("%s is still there after --repair", leftover)
	}
	if out, _, code := nexcageRun(t, env, bin, append([]string{"check"}, target...)...); code != 0 {
		t.Fatalf("check after --repair: exit %d\n%s", code, out)
	}
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ", a, b)
	}
}

// TestRecovery kills every writer (pull, unpack, convert, build, deploy's
// upload) with SIGKILL in the middle of its write: check reports the
// leftover, --repair removes it, and the next run succeeds with the same
// output as an undisturbed run.
func TestRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 300 MiB image several times")
	}
	bin := nexcageBinary(t)
	work := t.TempDir()
	os.Chmod(work, 0o755)
	image := bigLayout(t, filepath.Join(work, "layout"), 300)
	tmp := filepath.Join(work, "tmp")
	os.Mkdir(tmp, 0o755)
	store := filepath.Join(work, "store")
	env := append(os.Environ(), "TMPDIR="+tmp, "HOME="+work, "NEXCAGE_STORE="+store)
	const mib = 1 << 20

	t.Run("pull", func(t *testing.T) {
		want := nexcageOK(t, env, bin, "pull", "-q", "--store", filepath.Join(work, "ref-store"), image)
		nexcageOK(t, env, bin, "check", "store")
		if _, err := os.Stat(store); err == nil {
			t.Fatal("check created the store")
		}
		blobs := filepath.Join(store, "blobs", "sha256")
		killWhen(t, env, bin, []string{"pull", "-q", image}, func() bool { _, n := tempIn(blobs, "", ""); return n > 10*mib })
		leftover, _ := tempIn(blobs, "", "")
		recovers(t, env, bin, leftover, "store")
		if got := nexcageOK(t, env, bin, "pull", "-q", image); got != want {
			t.Errorf("pull printed %q, the undisturbed pull %q", got, want)
		}
		refBlobs, _ := filepath.Glob(filepath.Join(work, "ref-store", "blobs", "sha256", "*"))
		for _, rb := range refBlobs {
			sameFiles(t, rb, filepath.Join(blobs, filepath.Base(rb)))
		}
	})

	bundles := filepath.Join(work, "bundles")
	os.Mkdir(bundles, 0o755)
	t.Run("unpack", func(t *testing.T) {
		ref := filepath.Join(work, "ref-bundle")
		want := nexcageOK(t, env, bin, "unpack", "-q", image, ref)
		bundle := filepath.Join(bundles, "app")
		killWhen(t, env, bin, []string{"unpack", "-q", image, bundle}, func() bool { _, n := tempIn(bundles, ".app", "rootfs/data"); return n > 20 })
		leftover, _ := tempIn(bundles, ".app", "")
		recovers(t, env, bin, leftover, bundles)
		got := nexcageOK(t, env, bin, "unpack", "-q", image, bundle)
		if strings.ReplaceAll(got, bundle, ref) != want {
			t.Errorf("unpack printed %q, the undisturbed unpack %q", got, want)
		}
		a, err := fstree.Snapshot(ref, fstree.Options{MTime: true})
		if err != nil {
			t.Fatal(err)
		}
		b, err := fstree.Snapshot(bundle, fstree.Options{MTime: true})
		if err != nil {
			t.Fatal(err)
		}
		// The bundle directory itself and config.json are new files.
		delete(a, ".")
		delete(b, ".")
		a["config.json"].MTime, b["config.json"].MTime = 0, 0
		if d := fstree.Diff(a, b); len(d) > 0 {
			t.Errorf("the bundle differs from the undisturbed one:\n%s", strings.Join(d, "\n"))
		}
	})

	out := filepath.Join(work, "out")
	template := filepath.Join(out, "app.tar.zst")
	t.Run("convert", func(t *testing.T) {
		ref := filepath.Join(work, "ref-out")
		nexcageOK(t, env, bin, "convert", "-q", filepath.Join(bundles, "app"), "-o", filepath.Join(ref, "app.tar.zst"))
		killWhen(t, env, bin, []string{"convert", "-q", filepath.Join(bundles, "app"), "-o", template}, func() bool {
			_, n := tempIn(out, ".app.tar.zst", "")
			return n > 10*mib
		})
		leftover, _ := tempIn(out, ".app.tar.zst", "")
		recovers(t, env, bin, leftover, out)
		nexcageOK(t, env, bin, "convert", "-q", filepath.Join(bundles, "app"), "-o", template)
		for _, f := range []string{"app.tar.zst", "app.conf", "app.json"} {
			sameFiles(t, filepath.Join(ref, f), filepath.Join(out, f))
		}
		nexcageOK(t, env, bin, "check", template)
	})

	t.Run("build", func(t *testing.T) {
		ref := filepath.Join(work, "ref-build")
		nexcageOK(t, env, bin, "build", "-q", image, "--name", "app", "-o", ref+"/")
		built := filepath.Join(work, "built")
		killWhen(t, env, bin, []string{"build", "-q", image, "--name", "app", "-o", built + "/"}, func() bool {
			_, n := tempIn(built, ".", "")
			return n > 10*mib
		})
		leftover, _ := tempIn(built, ".", "")
		recovers(t, env, bin, leftover, built)
		// The layers it spilled are left in TMPDIR: the host check finds
		// them, --repair removes them.
		spills, _ := filepath.Glob(filepath.Join(tmp, "nexcage-flatten-*"))
		if len(spills) != 1 {
			t.Fatalf("spill directories in TMPDIR: %v", spills)
		}
		host, _, _ := nexcageRun(t, env, bin, "check")
		if !strings.Contains(host, "warn  "+tmp+": leftover "+filepath.Base(spills[0])+": temporary directory of an interrupted write") {
			t.Errorf("the host check does not report %s:\n%s", spills[0], host)
		}
		host, _, _ = nexcageRun(t, env, bin, "check", "--repair")
		if !strings.Contains(host, "ok    "+tmp+": leftover "+filepath.Base(spills[0])+": ") || !strings.Contains(host, "; repaired: removed it") {
			t.Errorf("the host check did not repair:\n%s", host)
		}
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Errorf("TMPDIR still holds %v", ents)
		}
		nexcageOK(t, env, bin, "build", "-q", image, "--name", "app", "-o", built+"/")
		refs, _ := filepath.Glob(filepath.Join(ref, "*"))
		if len(refs) != 3 {
			t.Fatalf("reference build wrote %v", refs)
		}
		for _, r := range refs {
			sameFiles(t, r, filepath.Join(built, filepath.Base(r)))
		}
	})

	t.Run("deploy", func(t *testing.T) {
		s := pvetest.NewStandIn(t)
		denv := append(append([]string(nil), s.Env...), "TMPDIR="+tmp, "HOME="+work, "NEXCAGE_STORE="+store)
		cache := s.TemplateDir("local")
		killWhen(t, denv, bin, []string{"deploy", template, "--hostname", "app"}, func() bool {
			_, n := tempIn(cache, ".app.tar.zst", "")
			return n > 0
		})
		leftover, _ := tempIn(cache, ".app.tar.zst", "")
		// The sidecars went first and are complete; without their
		// template they are leftovers of the upload too.
		rep := checkJSON(t, denv, bin, "local")
		if rep.ExitStatus != exitWarnings {
			t.Fatalf("check local: %+v", rep)
		}
		repaired := nexcageOK(t, denv, bin, "check", "--repair", "local")
		if !strings.Contains(repaired, "partial upload "+filepath.Base(leftover)+": ") || !strings.Contains(repaired, "repaired: removed it") {
			t.Errorf("check --repair local:\n%s", repaired)
		}
		if _, err := os.Stat(leftover); err == nil {
			t.Fatal("the partial upload is still there")
		}
		nexcageOK(t, denv, bin, "check", "local")

		got := nexcageOK(t, denv, bin, "deploy", template, "--hostname", "app")
		if got != "CT 100 created from local:vztmpl/app.tar.zst\n" {
			t.Errorf("deploy printed %q", got)
		}
		for _, f := range []string{"app.tar.zst", "app.conf", "app.json"} {
			sameFiles(t, filepath.Join(out, f), filepath.Join(cache, f))
		}
		if rep := checkJSON(t, denv, bin, "local"); rep.ExitStatus != 0 {
			t.Errorf("check local after the deploy: %+v", rep)
		}
	})
}

// TestCheckExitStatus: 0 when all is ok, 1 when anything fails, 3 for
// warnings only, and nothing on stderr beyond the report.
func TestCheckExitStatus(t *testing.T) {
	bin := nexcageBinary(t)
	work := t.TempDir()
	ref := corpusLayout(t, "whiteouts", "w")
	store := filepath.Join(work, "store")
	env := append(os.Environ(), "HOME="+work, "NEXCAGE_STORE="+store)
	nexcageOK(t, env, bin, "pull", "-q", "--platform", "linux/amd64", ref)
	nexcageOK(t, env, bin, "check", "store")

	leftover := filepath.Join(store, ".index.json"+atomicfile.TempMarker+"1")
	os.WriteFile(leftover, []byte("{"), 0o644)
	out, errs, code := nexcageRun(t, env, bin, "check", "-q", "store")
	if code != exitWarnings || errs != "" || !strings.Contains(out, "warn  "+store+": leftover ") {
		t.Errorf("warnings only: exit %d, stderr %q\n%s", code, errs, out)
	}
	os.Remove(leftover)

	os.WriteFile(filepath.Join(store, "oci-layout"), []byte("garbage"), 0o644)
	if out, errs, code := nexcageRun(t, env, bin, "check", "-q", "store"); code != exitFailure || errs != "" {
		t.Errorf("a failure: exit %d, stderr %q\n%s", code, errs, out)
	}
	out, _, code = nexcageRun(t, env, bin, "check", "--json", "store")
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitFailure || rep.ExitStatus != exitFailure || rep.OK {
		t.Errorf("--json: exit %d, %v\n%s", code, err, out)
	}
}
