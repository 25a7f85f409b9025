package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NobodyUID is the ordinary user (and group) Nobody runs programs as.
const NobodyUID = 65534

// Nobody is where a test runs programs as an ordinary user, for whom the
// kernel really refuses what root may do (chown, reading 0600 files of
// others, entering 0711 directories).
type Nobody struct {
	// Dir is a fresh directory the user may enter, removed when the test
	// ends. (t.TempDir's parents are closed to other users.)
	Dir string
	// Work is Dir/work, owned by the user: its HOME.
	Work    string
	setpriv string
}

// NewNobody requires root (to switch users at all) and setpriv, and makes
// Dir and Work; prefix names Dir.
func NewNobody(t testing.TB, prefix string) *Nobody {
	t.Helper()
	RequireRoot(t)
	setpriv := RequireTool(t, "setpriv")
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o755)
	os.Chown(work, NobodyUID, NobodyUID)
	return &Nobody{Dir: dir, Work: work, setpriv: setpriv}
}

// Command runs name with args as the user, with no supplementary groups
// and a minimal environment (HOME=Work, PATH=/usr/bin:/bin); a caller may
// append to cmd.Env.
func (n *Nobody) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(n.setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", name}, args...)...)
	cmd.Env = []string{"HOME=" + n.Work, "PATH=/usr/bin:/bin"}
	return cmd
}
