package pvetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/testenv"
)

// StandInTools are the PVE commands the stand-in provides.
var StandInTools = []string{"pct", "pvesm", "pvesh", "pveversion"}

// StandIn is a simulated PVE cluster on this machine: the stand-in
// commands of testdata/pve, and the host state they keep under Root
// (storage.cfg, nodes pve and pve2, CT configs and locks, template
// storage, and the LXC containers themselves under Root/var/lib/lxc).
type StandIn struct {
	// Root is the simulated host's "/"; NEXCAGE_PVE_ROOT.
	Root string
	// BinDir holds pct, pvesm, pvesh and pveversion.
	BinDir string
	// Env runs the stand-in: the caller's environment with BinDir first
	// in PATH and NEXCAGE_PVE_ROOT=Root (PVE_NODE and PVE_VERSION
	// removed: append them to pretend another node or version).
	Env []string
}

// storageCfg is the simulated cluster's storage.cfg; %[1]s is Root.
const storageCfg = `dir: local
	path %[1]s/var/lib/vz
	content vztmpl,iso,backup

lvmthin: local-lvm
	thinpool data
	vgname pve
	content rootdir,images

dir: offline
	path %[1]s/var/lib/offline
	content vztmpl,rootdir
	disable

dir: pve2only
	path %[1]s/var/lib/pve2only
	content rootdir
	nodes pve2
`

// NewStandIn builds the stand-in (once per test binary while any StandIn
// is alive), lays out a fresh simulated cluster with nodes pve and pve2,
// and removes it when the test ends, stopping every container started in
// it first. It needs root and LXC, and skips (or fails under
// NEXCAGE_REQUIRE_*) otherwise.
func NewStandIn(t testing.TB) *StandIn {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"lxc-start", "lxc-attach", "lxc-usernsexec", "lxc-stop", "lxc-info", "tar"} {
		testenv.RequireTool(t, tool)
	}
	bin, release, err := acquireStandInBinary()
	if err != nil {
		t.Fatalf("build the PVE stand-in: %v", err)
	}

	// Not t.TempDir: the container's mapped root (uid 100000) must be
	// able to traverse every directory down to the rootfs.
	root, err := os.MkdirTemp("", "nexcage-pve-")
	if err != nil {
		release()
		t.Fatal(err)
	}
	s := &StandIn{Root: root, BinDir: filepath.Join(root, "usr/bin")}
	t.Cleanup(func() {
		s.stopAll(t)
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("remove stand-in root: %v", err)
		}
		release()
	})
	if err := s.layout(bin); err != nil {
		t.Fatalf("lay out the simulated PVE host: %v", err)
	}
	var env []string
	for _, e := range os.Environ() {
		switch k, _, _ := strings.Cut(e, "="); k {
		case "PATH", "NEXCAGE_PVE_ROOT", "PVE_NODE", "PVE_VERSION":
			continue
		}
		env = append(env, e)
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	// LXC's tools live in sbin on some hosts.
	path += ":/usr/local/sbin:/usr/sbin:/sbin"
	s.Env = append(env, "PATH="+s.BinDir+":"+path, "NEXCAGE_PVE_ROOT="+root)
	return s
}

// NewStandInHost is NewStandIn made this test's PVE host, for the test
// and the commands it runs: BinDir first in PATH, NEXCAGE_PVE_ROOT its
// Root, PVE_VERSION and PVE_NODE empty (the stand-in's defaults; a test
// sets them to pretend another version or node). The test's TMPDIR,
// which holds Root, is made traversable by others, as a container's
// mapped root (uid 100000) must reach its rootfs through it.
func NewStandInHost(t testing.TB) *StandIn {
	t.Helper()
	s := NewStandIn(t)
	// testenv.Main and CheckLeaks give a test a private TMPDIR (0700);
	// a shared one such as /tmp already lets others through.
	tmp := os.TempDir()
	fi, err := os.Stat(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o011 != 0o011 {
		if err := os.Chmod(tmp, fi.Mode().Perm()|0o055); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", s.BinDir+string(filepath.ListSeparator)+os.Getenv("PATH"))
	t.Setenv("NEXCAGE_PVE_ROOT", s.Root)
	t.Setenv("PVE_VERSION", "")
	t.Setenv("PVE_NODE", "")
	return s
}

// layout creates the simulated host's directories and configuration.
func (s *StandIn) layout(bin string) error {
	if err := os.Chmod(s.Root, 0o755); err != nil {
		return err
	}
	dirs := []string{
		"usr/bin",
		"etc/pve/nodes/pve/lxc", "etc/pve/nodes/pve/qemu-server",
		"etc/pve/nodes/pve2/lxc", "etc/pve/nodes/pve2/qemu-server",
		"var/lib/vz/template/cache", "var/lib/vz/template/iso", "var/lib/vz/dump",
		"var/lib/offline/template/cache", "var/lib/pve2only",
		"var/lib/pvesim/local-lvm", "var/lib/lxc", "run/lock/lxc",
	}
	for _, d := range dirs {
		// MkdirAll honours the umask; chmod every level explicitly so
		// the mapped root can get through.
		if err := os.MkdirAll(s.Path(d), 0o755); err != nil {
			return err
		}
		for p := d; p != "."; p = filepath.Dir(p) {
			if err := os.Chmod(s.Path(p), 0o755); err != nil {
				return err
			}
		}
	}
	for _, tool := range StandInTools {
		if err := os.Symlink(bin, filepath.Join(s.BinDir, tool)); err != nil {
			return err
		}
	}
	// /etc/pve/lxc is the local node's directory, as pmxcfs shows it.
	if err := os.Symlink("nodes/pve/lxc", s.Path("etc/pve/lxc")); err != nil {
		return err
	}
	return os.WriteFile(s.Path("etc/pve/storage.cfg"), []byte(fmt.Sprintf(storageCfg, s.Root)), 0o640)
}

// Path is a path of the simulated host ("/etc/pve/storage.cfg") on this
// machine.
func (s *StandIn) Path(p string) string { return filepath.Join(s.Root, p) }

// TemplateDir is where a directory storage keeps its templates
// ("local" -> Root/var/lib/vz/template/cache).
func (s *StandIn) TemplateDir(storage string) string {
	dirs := map[string]string{"local": "var/lib/vz", "offline": "var/lib/offline", "pve2only": "var/lib/pve2only"}
	return s.Path(filepath.Join(dirs[storage], "template/cache"))
}

// ConfigPath is a CT's config file on a node.
func (s *StandIn) ConfigPath(node string, vmid int) string {
	return s.Path(fmt.Sprintf("etc/pve/nodes/%s/lxc/%d.conf", node, vmid))
}

// Command prepares one of the stand-in commands with s.Env, for callers
// that need stdin or their own environment.
func (s *StandIn) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, name), args...)
	cmd.Env = append([]string(nil), s.Env...)
	return cmd
}

// Run runs one of the stand-in commands with s.Env and returns stdout,
// stderr and the exit code. A command that cannot be started, or runs
// longer than five minutes, fails the test.
func (s *StandIn) Run(t testing.TB, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stdout, stderr, code = testenv.Output(t, s.Command(ctx, name, args...))
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), stdout, stderr)
	}
	return stdout, stderr, code
}

// stopAll kills every container under the simulated lxcpath.
func (s *StandIn) stopAll(t testing.TB) {
	lxcpath := s.Path("var/lib/lxc")
	ents, _ := os.ReadDir(lxcpath)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(lxcpath, e.Name(), "config")); err != nil {
			continue // never started
		}
		c := &Container{LXCPath: lxcpath, Name: e.Name()}
		if err := c.Stop(context.Background()); err != nil {
			t.Logf("stop container %s: %v", e.Name(), err)
		}
	}
}

// The stand-in binary is built once and shared by every StandIn alive at
// the time; the last one to go removes it.
var standInBuild struct {
	sync.Mutex
	users int
	dir   string
	bin   string
}

func acquireStandInBinary() (bin string, release func(), err error) {
	b := &standInBuild
	b.Lock()
	defer b.Unlock()
	if b.users == 0 {
		dir, err := os.MkdirTemp("", "nexcage-pve-bin-")
		if err != nil {
			return "", nil, err
		}
		// Others (setpriv'd callers in tests) must be able to run it.
		os.Chmod(dir, 0o755)
		bin := filepath.Join(dir, "pve")
		if err := buildStandIn(bin); err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
		b.dir, b.bin = dir, bin
	}
	b.users++
	var once sync.Once
	return b.bin, func() {
		once.Do(func() {
			b.Lock()
			defer b.Unlock()
			b.users--
			if b.users == 0 {
				os.RemoveAll(b.dir)
				b.dir, b.bin = "", ""
			}
		})
	}, nil
}

func buildStandIn(out string) error {
	mod, err := moduleRoot()
	if err != nil {
		return err
	}
	// The go tool that runs the tests, or the one on PATH.
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			return fmt.Errorf("no go tool to build testdata/pve: %v", err)
		}
	}
	cmd := exec.Command(goTool, "build", "-o", out, "./testdata/pve")
	cmd.Dir = mod
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./testdata/pve: %v\n%s", err, b)
	}
	return nil
}

// moduleRoot walks up from the working directory (a package directory
// under go test) to go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
