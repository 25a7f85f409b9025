package pct

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestCopyOwnerStaysInRoot: copyOwner, which chowns what an image's
// VOLUME path names in a mounted CT, on its own (without PVE's refusal of
// a symlinked mount point in front of it): a symlink out of the root,
// absolute or through "..", a path with "..", and a directory with no
// volume mounted on it are all refused and nothing changes; a volume
// mounted at the image's directory takes that directory's owner and mode.
// Only the volume named is changed: another directory mounted there, or
// one mounted on top of the volume (PVE mounts by key, so an admin's bind
// at the same path may be), is refused and keeps its owner and mode.
func TestCopyOwnerStaysInRoot(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	victim := t.TempDir()
	os.Chmod(victim, 0o700)
	mustDo(t, os.Mkdir(filepath.Join(victim, "data"), 0o700))
	mustDo(t, os.Symlink(victim, filepath.Join(root, "abs")))
	mustDo(t, os.Symlink(strings.Repeat("../", 40)+strings.TrimPrefix(victim, "/"), filepath.Join(root, "up")))
	mustDo(t, os.Mkdir(filepath.Join(root, "app"), 0o750))
	mustDo(t, os.Chown(filepath.Join(root, "app"), 101000, 101002))
	for _, mp := range []string{"/abs", "/abs/data", "/up/data", "/app/../abs", "app", "/app"} {
		err := copyOwner(root, mp, victim)
		if err == nil || (mp == "/app" && !strings.Contains(err.Error(), "no volume is mounted")) {
			t.Errorf("copyOwner(%s) = %v, want a refusal", mp, err)
		}
	}
	for _, p := range []string{victim, filepath.Join(victim, "data")} {
		fi, err := os.Stat(p)
		mustDo(t, err)
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is now %d %v", p, st.Uid, fi.Mode().Perm())
		}
	}

	vol := t.TempDir()
	mustDo(t, unix.Mount(vol, filepath.Join(root, "app"), "", unix.MS_BIND, ""))
	defer unix.Unmount(filepath.Join(root, "app"), 0)
	// The admin's bind of a host directory on top of the new volume.
	mustDo(t, unix.Mount(victim, filepath.Join(root, "app"), "", unix.MS_BIND, ""))
	err := copyOwner(root, "/app", vol)
	unix.Unmount(filepath.Join(root, "app"), 0)
	if err == nil || !strings.Contains(err.Error(), "not the new volume") {
		t.Errorf("copyOwner with a host directory mounted over the volume = %v, want a refusal", err)
	}
	if err := copyOwner(root, "/app", victim); err == nil {
		t.Errorf("copyOwner naming another directory than the one mounted succeeded")
	}
	fi, err := os.Stat(victim)
	mustDo(t, err)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm() != 0o700 {
		t.Errorf("the host directory mounted over the volume is now %d %v", st.Uid, fi.Mode().Perm())
	}
	if err := copyOwner(root, "/app", vol); err != nil {
		t.Fatal(err)
	}
	fi, err = os.Stat(vol)
	mustDo(t, err)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 101000 || st.Gid != 101002 || fi.Mode().Perm() != 0o750 {
		t.Errorf("the mounted volume's root is %d:%d %v, want the image directory's 101000:101002 0750", st.Uid, st.Gid, fi.Mode().Perm())
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
