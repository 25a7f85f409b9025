package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/fstree"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

// TestBrokenAndHostileInput runs the real binary on each broken or
// hostile input: the exit status and the words of the message are fixed,
// nothing changes outside the output directory and the store, and no
// partial output is left. A row with status 0 is an input that must be
// coped with (a flaky registry): its template and sidecars must be there.
func TestBrokenAndHostileInput(t *testing.T) {
	bin := nexcageBinary(t)
	cases, err := testimage.Corpus()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]testimage.Case{}
	for _, c := range cases {
		byName[c.Name] = c
	}
	hostile, err := testimage.Hostile()
	if err != nil {
		t.Fatal(err)
	}
	// layoutOf writes an image as an OCI layout and returns its reference;
	// blob lets a case break one of its files.
	layoutOf := func(t *testing.T, img v1.Image) (string, func(kind string) string) {
		dir := filepath.Join(t.TempDir(), "layout")
		if err := testimage.WriteLayout(dir, "x", testimage.Case{Image: img}); err != nil {
			t.Fatal(err)
		}
		blob := func(kind string) string {
			m, _ := img.Manifest()
			d := m.Layers[len(m.Layers)-1].Digest
			if kind == "config" {
				d = m.Config.Digest
			}
			return filepath.Join(dir, "blobs", d.Algorithm, d.Hex)
		}
		return "oci:" + dir + ":x", blob
	}
	// sparseOverSmallDisk is a 32 MiB tmpfs (smallTmpfs) and an OCI
	// layout whose one layer holds a 10 GiB sparse file: a layer larger
	// than the free space. Mounting needs root.
	sparseOverSmallDisk := func(t *testing.T) (tmp, ref string) {
		testenv.RequireRoot(t)
		tmp = smallTmpfs(t)
		ref, _ = layoutOf(t, layerImage(t, sparseLayer(t)))
		return tmp, ref
	}
	// A row's args may set these: bounded rows are tiny inputs that once
	// cost minutes or gigabytes, which must now end in seconds and modest
	// memory; extraEnv overrides the environment (TMPDIR).
	var bounded bool
	var extraEnv []string
	build := func(ref string, extra ...string) []string {
		return append([]string{"build", "-q", "--name", "x", ref}, extra...)
	}
	// stagedImplicitDir is a staged build of an image whose implicit
	// directory a later entry replaced by a symlink to a host directory.
	stagedImplicitDir := func(later, climb bool) func(t *testing.T) []string {
		return func(t *testing.T) []string {
			img, err := testimage.ImplicitDirToHost(testenv.VictimDir(t, "v"), "v", later, climb)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := layoutOf(t, img)
			return build(ref, "--staged")
		}
	}

	for _, tc := range []struct {
		name   string
		args   func(t *testing.T) []string
		status int
		words  []string
	}{
		{"corrupt blob", func(t *testing.T) []string {
			ref, blob := layoutOf(t, byName["modes"].Image)
			b, _ := os.ReadFile(blob("layer"))
			b[len(b)/2] ^= 0xff
			os.WriteFile(blob("layer"), b, 0o644)
			return build(ref)
		}, 1, []string{"hashes to", "corrupt"}},
		{"truncated blob", func(t *testing.T) []string {
			ref, blob := layoutOf(t, byName["modes"].Image)
			os.Truncate(blob("layer"), 20)
			return build(ref)
		}, 1, []string{"layer 2"}},
		{"missing blob", func(t *testing.T) []string {
			ref, blob := layoutOf(t, byName["modes"].Image)
			os.Remove(blob("layer"))
			return build(ref)
		}, 1, []string{"layer 2", "sha256:"}},
		{"diff_id mismatch", func(t *testing.T) []string {
			img := byName["modes"].Image
			cf, _ := img.ConfigFile()
			cf = cf.DeepCopy()
			cf.RootFS.DiffIDs[1] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
			bad, err := mutate.ConfigFile(img, cf)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := layoutOf(t, bad)
			return build(ref)
		}, 1, []string{"diff_id", "corrupt"}},
		{"dotdot entry", func(t *testing.T) []string { ref, _ := layoutOf(t, hostile["dotdot"]); return build(ref) }, 1, []string{`"../escape" climbs out of the root`}},
		{"absolute entry", func(t *testing.T) []string { ref, _ := layoutOf(t, hostile["absolute"]); return build(ref) }, 1, []string{"absolute name"}},
		{"symlink escape", func(t *testing.T) []string { ref, _ := layoutOf(t, hostile["symlink-escape"]); return build(ref) }, 1, []string{"symlink that points outside the root"}},
		{"hardlink escape", func(t *testing.T) []string { ref, _ := layoutOf(t, hostile["hardlink-escape"]); return build(ref) }, 1, []string{"points outside the root"}},
		{"staged unpack of a hostile layer", func(t *testing.T) []string {
			ref, _ := layoutOf(t, hostile["symlink-escape"])
			return []string{"unpack", "-q", ref, "bundle"}
		}, 1, []string{"outside the root"}},
		// Issue 15 finding 1: implicit directories fixed up through a
		// symlink a later entry put in their place. The build succeeds (a
		// symlink to /anywhere is a valid image); the host must not change.
		{"staged build: implicit directory replaced by an absolute symlink to the host", stagedImplicitDir(true, false), 0, nil},
		{"staged build: implicit directory replaced by a climbing symlink to the host", stagedImplicitDir(false, true), 0, nil},
		// Finding 3: /etc/passwd and /etc/group symlinked to host files.
		// Inside the rootfs they point at nothing, so the user is unknown:
		// the staged and the streaming build both refuse, and neither
		// reads the host's uid 4242.
		{"staged build: account files symlinked to the host", func(t *testing.T) []string {
			return build(hostAccountsImage(t, layoutOf), "--staged")
		}, 1, []string{`"hostuser"`, "unable to find user"}},
		{"streaming build: account files symlinked to the host", func(t *testing.T) []string {
			return build(hostAccountsImage(t, layoutOf))
		}, 1, []string{`"hostuser"`, "unable to find user"}},
		// Finding 8: --repair must not delete through a store's symlinks.
		{"check --repair of a store whose blobs/ is a symlink", func(t *testing.T) []string {
			outside := t.TempDir()
			testenv.VictimFile(t, filepath.Join(outside, "sha256", strings.Repeat("ab", 32)), "not the blob its name says\n")
			store := filepath.Join(t.TempDir(), "store")
			os.Mkdir(store, 0o755)
			os.WriteFile(filepath.Join(store, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
			os.WriteFile(filepath.Join(store, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644)
			os.Symlink(outside, filepath.Join(store, "blobs"))
			return []string{"check", "--repair", store}
		}, 1, nil}, // the refusal is a result line on stdout; TestCheckRefusesSymlinkedBlobs reads it
		{"sparse claim", func(t *testing.T) []string {
			ref, _ := layoutOf(t, layerImage(t, sparseLayer(t)))
			return build(ref, "--max-layer-size", "1G")
		}, 1, []string{"decompression bomb", "--max-layer-size"}},
		{"gzip bomb", func(t *testing.T) []string {
			ref, _ := layoutOf(t, layerImage(t, zerosGzipLayer(t, 64<<20)))
			return build(ref, "--max-layer-size", "16M")
		}, 1, []string{"more than 16.0 MiB", "decompression bomb"}},
		{"name over PATH_MAX", func(t *testing.T) []string {
			l, err := testimage.Layer([]testimage.Entry{testimage.File(strings.Repeat("d/", 2100)+"f", 0o644, "x")}, testimage.Gzip)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := layoutOf(t, layerImage(t, l))
			return build(ref)
		}, 1, []string{"PATH_MAX"}},
		// Issue 15: tiny inputs that cost unbounded time, memory or disk.
		{"symlink target of 8000 components", func(t *testing.T) []string {
			bounded = true
			ref, _ := layoutOf(t, entriesImage(t, testimage.Symlink("l", strings.Repeat("a/", 8000)), testimage.File("l/x", 0o644, "x")))
			return build(ref)
		}, 1, []string{"symlink to a 16000-byte target", "path length limit"}},
		{"staged unpack of a symlink target of 8000 components", func(t *testing.T) []string {
			bounded = true
			ref, _ := layoutOf(t, entriesImage(t, testimage.Symlink("l", strings.Repeat("a/", 8000)), testimage.File("l/x", 0o644, "x")))
			return []string{"unpack", "-q", ref, "bundle"}
		}, 1, []string{"symlink to a 16000-byte target"}},
		{"symlink chain resolving past PATH_MAX", func(t *testing.T) []string {
			bounded = true
			// Each link is legal; followed in turn they name a path
			// longer than the kernel would resolve.
			var es []testimage.Entry
			for i := range 4 {
				es = append(es, testimage.Symlink(fmt.Sprintf("l%d", i+1), fmt.Sprintf("l%d/", i)+strings.Repeat("b/", 1000)))
			}
			es = append(es, testimage.Dir("l0", 0o755), testimage.File("l4/x", 0o644, "x"))
			ref, _ := layoutOf(t, entriesImage(t, es...))
			return build(ref)
		}, 1, []string{"longer than Linux's PATH_MAX"}},
		{"opaque whiteout repeated 5000 times", func(t *testing.T) []string {
			bounded = true
			ref, _ := layoutOf(t, entriesImage(t, repeatedOpaque(5000)...))
			return build(ref)
		}, 0, nil},
		// Fewer: umoci's extraction alone takes seconds for 5000 files on a
		// loaded machine. Before the fix, 2000 took over 30 s.
		{"staged build of an opaque whiteout repeated 2000 times", func(t *testing.T) []string {
			bounded = true
			ref, _ := layoutOf(t, entriesImage(t, repeatedOpaque(2000)...))
			return build(ref, "--staged")
		}, 0, nil},
		{"3000 files 1000 directories deep", func(t *testing.T) []string {
			bounded = true
			es := []testimage.Entry{testimage.File("x", 0o755, "#!/bin/sh\n")}
			deep := strings.Repeat("n/", 1000)
			for i := range 3000 {
				es = append(es, testimage.File(fmt.Sprintf("%sf%d", deep, i), 0o644, ""))
			}
			ref, _ := layoutOf(t, entriesImage(t, es...))
			return build(ref)
		}, 0, nil},
		{"more entries than --max-entries", func(t *testing.T) []string {
			bounded = true
			var es []testimage.Entry
			for i := range 3000 {
				es = append(es, testimage.File(fmt.Sprintf("f%d", i), 0o644, ""))
			}
			ref, _ := layoutOf(t, entriesImage(t, es...))
			return build(ref, "--max-entries", "2000")
		}, 1, []string{"more than 2000 entries", "--max-entries"}},
		{"name component over NAME_MAX", func(t *testing.T) []string {
			bounded = true
			ref, _ := layoutOf(t, entriesImage(t, testimage.File("d/"+strings.Repeat("n", 300), 0o644, "x")))
			return build(ref)
		}, 1, []string{"300-byte name component", "NAME_MAX"}},
		{"3 GiB sparse config blob", func(t *testing.T) []string {
			bounded = true
			ref, blob := layoutOf(t, byName["modes"].Image)
			os.Truncate(blob("config"), 3<<30) // apparent size only
			return build(ref)
		}, 1, []string{"image config", "more than 4.0 MiB", "metadata size limit"}},
		{"8 GiB sparse layer whose manifest says a few hundred bytes", func(t *testing.T) []string {
			bounded = true
			ref, blob := layoutOf(t, byName["modes"].Image)
			os.Truncate(blob("layer"), 8<<30)
			return build(ref)
		}, 1, []string{"larger than the", "the manifest says"}},
		{"oci-archive with a sparse member", func(t *testing.T) []string {
			bounded = true
			return build("oci-archive:" + sparseArchive(t, byName["modes"].Image, false))
		}, 1, []string{"sparse member", "archive size limit"}},
		{"docker-archive with a sparse member", func(t *testing.T) []string {
			bounded = true
			return build("docker-archive:" + sparseArchive(t, byName["modes"].Image, true))
		}, 1, []string{"sparse member", "archive size limit"}},
		{"sparse layer larger than the free space of TMPDIR", func(t *testing.T) []string {
			bounded = true
			tmp, ref := sparseOverSmallDisk(t)
			// No --max-layer-size: 10 GiB is under the default.
			extraEnv = []string{"TMPDIR=" + tmp}
			return build(ref)
		}, 1, []string{"free disk space", "needs 10.0 GiB"}},
		{"staged unpack of a sparse layer larger than the free space", func(t *testing.T) []string {
			bounded = true
			tmp, ref := sparseOverSmallDisk(t)
			return []string{"unpack", "-q", ref, tmp + "/bundle"}
		}, 1, []string{"free disk space", "needs 10.0 GiB"}},
		{"config.json not JSON", func(t *testing.T) []string {
			d := t.TempDir()
			os.WriteFile(filepath.Join(d, "config.json"), []byte("{\n oops"), 0o644)
			return []string{"convert", d}
		}, 1, []string{"not a valid OCI runtime config", "line 2"}},
		{"hung registry", func(t *testing.T) []string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			go func() { // accept and never answer
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					t.Cleanup(func() { c.Close() })
				}
			}()
			return build(l.Addr().String()+"/app:1", "--timeout", "1s")
		}, 1, []string{"did not answer in time", "--timeout"}},
		// Not a refusal: the registry fails each blob once with a 500, the
		// pull retries, and the build succeeds. Status 0 makes the harness
		// check that the template and its sidecars were written.
		{"registry returns 500 then 200 (retried)", func(t *testing.T) []string {
			return build(flakyRegistry(t, byName["modes"].Image) + "/flaky:1")
		}, 0, nil},
		// Issue 15: a template's sidecars are data from whoever made
		// the template. Each deploy runs against a PVE stand-in with
		// --start; hostileDeploy fails the test if a hook ran or a
		// container was made.
		// Line 7: the system template's .conf holds 6 lines before it (its
		// environment is kept, as PVE's own OCI import keeps it).
		{"template .conf with a pre-start hook", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("lxc.hook.pre-start: /bin/sh -c 'touch MARKER'"))}
		}, 1, []string{`line 7 "lxc.hook.pre-start: /bin/sh -c 'touch `, "raw key lxc.hook.pre-start is not one nexcage writes", "--allow-raw-lxc"}},
		{"template .conf with AppArmor off", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("lxc.apparmor.profile: unconfined"))}
		}, 1, []string{`"lxc.apparmor.profile: unconfined": raw key lxc.apparmor.profile`}},
		{"template .conf with an empty lxc.cap.drop", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("lxc.cap.drop:"))}
		}, 1, []string{`"lxc.cap.drop:": raw key lxc.cap.drop`}},
		{"template .conf with an autodev hook, LXC-style", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("lxc.hook.autodev = /bin/sh -c 'touch MARKER'"))}
		}, 1, []string{"raw key lxc.hook.autodev"}},
		{"template .conf binding the host's /", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("mp0: /,mp=/host"))}
		}, 1, []string{`"mp0: /,mp=/host": "/" is the host's root directory`}},
		{"template .conf binding /etc/pve", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("mp0: /etc/pve,mp=/pve"))}
		}, 1, []string{`is in /etc/pve`}},
		{"template .conf with a tmpfs made a bind", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("lxc.mount.entry: tmpfs srv tmpfs size=1m,bind,create=dir 0 0"))}
		}, 1, []string{`tmpfs option "bind" is not accepted`}},
		{"template .conf with a bind mount entry", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, appendConf("lxc.mount.entry: / host none rbind,create=dir 0 0"))}
		}, 1, []string{"only tmpfs mounts"}},
		{"check of a template .conf with a hook", func(t *testing.T) []string {
			return []string{"check", hostileDeploy(t, bin, appendConf("lxc.hook.pre-start: /bin/sh -c 'touch MARKER'"))}
		}, 1, nil},
		{"image volume with a newline", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, setVolumes("/data\nmp1: /"))}
		}, 1, []string{"image volume", "control character"}},
		{"relative image volume", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, setVolumes("data"))}
		}, 1, []string{"image volume", "not an absolute path"}},
		{"--mount destination with a newline", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, func(_, _, _ string) {}), "--mount", "/srv:/data\nlxc.hook.pre-start=x"}
		}, 1, []string{"control character"}},
		{"--mount of the host's /", func(t *testing.T) []string {
			return []string{"deploy", "--start", hostileDeploy(t, bin, func(_, _, _ string) {}), "--mount", "/:/host"}
		}, 1, []string{`--mount source "/" is the host's root directory`}},
		{"bundle tmpfs with a smuggled bind option", func(t *testing.T) []string {
			return []string{"check", hostileBundle(t, `[{"destination": "/srv", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m,bind"]}]`)}
		}, 1, nil},
		{"bundle tmpfs on /", func(t *testing.T) []string {
			return []string{"check", hostileBundle(t, `[{"destination": "/", "type": "tmpfs", "source": "tmpfs"}]`)}
		}, 1, nil},
		{"bundle bind of /etc/pve", func(t *testing.T) []string {
			return []string{"check", hostileBundle(t, `[{"destination": "/pve", "type": "bind", "source": "/etc/pve"}]`)}
		}, 1, nil},
		// Finding 7: an image VOLUME becomes an mpN's mp=.
		{"image VOLUME with a newline", func(t *testing.T) []string {
			ref, _ := layoutOf(t, volumeImage(t, "/data\nlxc.hook.pre-start: /x"))
			return build(ref)
		}, 1, []string{"image volume", "control character"}},
		{"relative image VOLUME", func(t *testing.T) []string {
			ref, _ := layoutOf(t, volumeImage(t, "data"))
			return build(ref)
		}, 1, []string{"image volume", "not an absolute path"}},
		{"image VOLUME on /", func(t *testing.T) []string {
			ref, _ := layoutOf(t, volumeImage(t, "/"))
			return build(ref)
		}, 1, []string{"image volume", "the container's root"}},
		// Finding 11b: convert never writes a .conf deploy and check
		// cannot read.
		{"environment over what a CT config holds", func(t *testing.T) []string {
			ref, _ := layoutOf(t, bigEnvImage(t, 3<<19))
			return build(ref)
		}, 1, []string{"over the 1.0 MiB PVE stores for a CT config"}},
		{"full disk", func(t *testing.T) []string {
			testenv.RequireRoot(t)
			out := filepath.Join(t.TempDir(), "small")
			os.Mkdir(out, 0o755)
			if err := syscall.Mount("tmpfs", out, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Unmount(out, 0) })
			ref, _ := layoutOf(t, byName["alpine-amd64"].Image)
			return []string{"build", "-q", "--name", "x", ref, "-o", out + "/"}
		}, 1, []string{"no space left on device", "free space in"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			bounded, extraEnv = false, nil
			args := tc.args(t)
			hasOut := false
			for _, a := range args {
				hasOut = hasOut || a == "-o"
			}
			if !hasOut && args[0] == "build" {
				args = append(args, "-o", filepath.Join(work, "out")+"/")
			}
			before, _ := fstree.Snapshot(work, fstree.Options{})
			env := append(os.Environ(), "HOME="+work, "NEXCAGE_STORE="+filepath.Join(work, "store"), "TMPDIR="+work)
			env = append(env, extraEnv...)
			cmd := newCmd(bin, args, env, work)
			// A child's peak RSS from wait4 includes the memory of the
			// process it was forked from (exec keeps the old mm's high
			// water mark), and Go forks sharing the test's own, large
			// under -race. GNU time is a small process to fork from.
			rssFile := filepath.Join(t.TempDir(), "maxrss")
			if bounded {
				cmd = newCmd(testenv.RequireTool(t, "time"), append([]string{"-f", "%M", "-o", rssFile, bin}, args...), env, work)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			err := cmd.Run()
			code := 0
			if err != nil {
				code = cmd.ProcessState.ExitCode()
			}
			if code != tc.status {
				t.Fatalf("exit %d, want %d\n%s", code, tc.status, stderr.String())
			}
			for _, w := range tc.words {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "goroutine ") || strings.Contains(stderr.String(), "panic") {
				t.Errorf("a Go stack reached the user:\n%s", stderr.String())
			}
			took := time.Since(start)
			if took > 60*time.Second {
				t.Errorf("took %s", took)
			}
			if bounded {
				// Generous ceilings: the fixed code takes well under a
				// second and under 100 MB on these.
				kib, err := os.ReadFile(rssFile)
				if err != nil {
					t.Fatal(err)
				}
				// The last line; a failed command adds a line above it.
				lines := strings.Split(strings.TrimSpace(string(kib)), "\n")
				rss, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
				if err != nil {
					t.Fatalf("GNU time's peak RSS %q: %v", kib, err)
				}
				rss <<= 10
				t.Logf("took %s, peak RSS %d MB", took.Round(time.Millisecond), rss>>20)
				if took > 10*time.Second {
					t.Errorf("took %s on a tiny input, want < 10s", took)
				}
				if rss > 300<<20 {
					t.Errorf("peak RSS %d MB on a tiny input, want < 300 MB", rss>>20)
				}
			}
			// Nothing outside the store and the output directory changed,
			// and no partial output was left anywhere.
			after, _ := fstree.Snapshot(work, fstree.Options{})
			for _, d := range fstree.Diff(before, after) {
				if !strings.HasPrefix(d, "store") && !strings.HasPrefix(d, "out") && !strings.HasPrefix(d, "leakcheck") {
					t.Errorf("changed outside the output: %s", d)
				}
			}
			filepath.Walk(work, func(p string, fi os.FileInfo, err error) error {
				if err == nil && (atomicfile.IsTemp(p) || strings.HasPrefix(fi.Name(), "nexcage-")) {
					t.Errorf("left behind: %s", p)
				}
				return nil
			})
			entries, _ := os.ReadDir(filepath.Join(work, "out"))
			if tc.status != 0 || args[0] != "build" {
				if len(entries) != 0 {
					t.Errorf("partial output: %v", entries)
				}
				return
			}
			// A success: one template, with its .conf and .json.
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if len(names) != 3 || !strings.HasSuffix(names[2], ".tar.zst") ||
				names[0] != strings.TrimSuffix(names[2], ".tar.zst")+".conf" ||
				names[1] != strings.TrimSuffix(names[2], ".tar.zst")+".json" {
				t.Errorf("output %v, want a template with its .conf and .json", names)
			}
		})
	}
}

// hostAccountsImage stores an image whose /etc/passwd and /etc/group are
// symlinks to host files naming "hostuser" (uid 4242), its User.
func hostAccountsImage(t *testing.T, layoutOf func(*testing.T, v1.Image) (string, func(string) string)) string {
	t.Helper()
	host := t.TempDir()
	passwd, group := filepath.Join(host, "passwd"), filepath.Join(host, "group")
	testenv.VictimFile(t, passwd, "hostuser:x:4242:4242:host:/host-home:/bin/sh\n")
	testenv.VictimFile(t, group, "hostgroup:x:4242:\nwheel:x:4343:hostuser\n")
	img, err := testimage.AccountFilesToHost(passwd, group, "hostuser")
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := layoutOf(t, img)
	return ref
}

// entriesImage is a one-layer linux/amd64 image of hand-made entries.
func entriesImage(t *testing.T, es ...testimage.Entry) v1.Image {
	t.Helper()
	l, err := testimage.Layer(es, testimage.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	return layerImage(t, l)
}

// repeatedOpaque is n files in d and the opaque whiteout of d n times:
// each whiteout used to walk everything in d again, N² in all.
func repeatedOpaque(n int) []testimage.Entry {
	es := []testimage.Entry{testimage.File("x", 0o755, "#!/bin/sh\n"), testimage.Dir("d", 0o755)}
	for i := range n {
		es = append(es, testimage.File(fmt.Sprintf("d/f%d", i), 0o644, ""), testimage.OpaqueWhiteout("d"))
	}
	return es
}

// sparseArchive writes img as an oci-archive (or a docker-archive) with
// a 4 GiB sparse member added by GNU tar: a few KiB that extract, or
// hash, to 4 GiB.
func sparseArchive(t *testing.T, img v1.Image, docker bool) string {
	t.Helper()
	tarTool := testenv.RequireTool(t, "tar")
	out := filepath.Join(t.TempDir(), "archive.tar")
	huge := t.TempDir()
	testenv.SparseFile(t, filepath.Join(huge, "huge"), 4<<30)
	if docker {
		// Written, unpacked and packed again with the member: GNU tar
		// appends (-r) nothing sparse.
		tag, err := name.NewTag("x:1")
		if err != nil {
			t.Fatal(err)
		}
		plain := filepath.Join(t.TempDir(), "plain.tar")
		if err := tarball.WriteToFile(plain, tag, img); err != nil {
			t.Fatal(err)
		}
		testenv.Run(t, tarTool, "-xf", plain, "-C", huge)
		// The image's own last layer grows a 4 GiB hole: the archive
		// still names it, and reading it hashes and stores 4 GiB.
		os.Remove(filepath.Join(huge, "huge"))
		var m []struct{ Layers []string }
		raw, _ := os.ReadFile(filepath.Join(huge, "manifest.json"))
		if err := json.Unmarshal(raw, &m); err != nil || len(m) != 1 || len(m[0].Layers) == 0 {
			t.Fatalf("manifest.json of the docker archive: %v", err)
		}
		if err := os.Truncate(filepath.Join(huge, m[0].Layers[len(m[0].Layers)-1]), 4<<30); err != nil {
			t.Fatal(err)
		}
		names, _ := filepath.Glob(filepath.Join(huge, "*"))
		args := []string{"--sparse", "--format=pax", "-cf", out, "-C", huge}
		for _, n := range names {
			args = append(args, filepath.Base(n))
		}
		testenv.Run(t, tarTool, args...)
	} else {
		dir := filepath.Join(t.TempDir(), "layout")
		if err := testimage.WriteLayout(dir, "x", testimage.Case{Image: img}); err != nil {
			t.Fatal(err)
		}
		os.Rename(filepath.Join(huge, "huge"), filepath.Join(dir, "blobs", "huge"))
		testenv.Run(t, tarTool, "--sparse", "--format=pax", "-cf", out, "-C", dir, ".")
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() > 1<<20 {
		t.Fatalf("the archive is not small (%v): tar did not write the member sparse", err)
	}
	return out
}

// smallTmpfs mounts a 32 MiB tmpfs for the test: a disk that fills.
func smallTmpfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	os.Mkdir(dir, 0o755)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=32m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// layerImage is a one-layer linux/amd64 image.
func layerImage(t *testing.T, l v1.Layer) v1.Image {
	t.Helper()
	img, err := testimage.Image([]v1.Layer{l}, v1.Config{Entrypoint: []string{"/x"}}, v1.Platform{OS: "linux", Architecture: "amd64"}, false)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// sparseLayer holds a 10 GiB sparse file written by GNU tar.
func sparseLayer(t *testing.T) v1.Layer {
	return static.NewLayer(testenv.SparseTar(t, "huge", 10<<30), types.OCIUncompressedLayer)
}

// zerosGzipLayer is a small gzip layer holding one file of n zero bytes.
func zerosGzipLayer(t *testing.T, n int64) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: n})
	zero := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(zero)) {
		tw.Write(zero[:min(int64(len(zero)), left)])
	}
	tw.Close()
	zw.Close()
	return static.NewLayer(b.Bytes(), types.OCILayer)
}

func newCmd(bin string, args, env []string, dir string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Dir = env, dir
	return cmd
}

// flakyRegistry serves img as flaky:1 from an in-process registry that
// answers the first request for each blob with a 500 and passes the
// following ones through. It returns the registry's host:port, and fails
// the test at its end unless 500s were served and each blob was then
// served again: otherwise a passing build proves nothing about retries.
func flakyRegistry(t *testing.T, img v1.Image) string {
	t.Helper()
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var (
		mu     sync.Mutex
		armed  bool
		failed = map[string]bool{} // blob paths answered with a 500
		served = map[string]int{}  // and then passed through
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/sha256:") {
			mu.Lock()
			first := armed && !failed[r.URL.Path]
			if first {
				failed[r.URL.Path] = true
			} else if armed {
				served[r.URL.Path]++
			}
			mu.Unlock()
			if first {
				http.Error(w, "flaky registry: try again", http.StatusInternalServerError)
				return
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, err := name.ParseReference(host + "/flaky:1")
	if err != nil {
		t.Fatal(err)
	}
	// A transport of its own, closed after the push, so the push leaves no
	// connections behind; the push itself is not failed.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	if err := remote.Write(ref, img, remote.WithTransport(tr)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	mu.Lock()
	armed = true
	mu.Unlock()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		// The config and every layer: each must have failed once and
		// then been served.
		if want := len(m.Layers) + 1; len(failed) != want {
			t.Errorf("the registry failed %d blob(s) with a 500, want %d (config and layers): %v", len(failed), want, failed)
		}
		for p := range failed {
			if served[p] == 0 {
				t.Errorf("%s failed with a 500 and was never asked for again", p)
			}
		}
	})
	return host
}
