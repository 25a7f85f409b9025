package pct

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

// PVE's messages (proxmox.md §4) map to typed errors that name the
// parameter and say what to do.
func TestMapError(t *testing.T) {
	for _, tc := range []struct {
		stderr string
		kind   error
		param  string
		words  []string
	}{
		{"CT 100 already exists on node 'pve'\n", ErrAlreadyExists, "vmid", []string{"CT 100", "'pve'", "choose another VMID"}},
		{"VM 100 already exists on node 'pve2'\n", ErrAlreadyExists, "vmid", []string{"'pve2'"}},
		{"400 Parameter verification failed.\nvmid: VM 100 already exists\n", ErrAlreadyExists, "vmid", nil},
		{"unable to create CT 101 - can't find file 'local:vztmpl/x.tar.zst'\n", ErrNotFound, "ostemplate", []string{"local:vztmpl/x.tar.zst"}},
		{"storage 'nope' does not exist\n", ErrNotFound, "storage", []string{"'nope'", "pvesm status"}},
		{"storage 'offline' is disabled\n", ErrStorage, "storage", []string{"disabled"}},
		{"storage 'pve2only' is not available on node 'pve'\n", ErrStorage, "storage", []string{"node 'pve'"}},
		{"400 Parameter verification failed.\nhostname: invalid format - value does not look like a valid DNS name\nmemory: value must have a minimum value of 16\npassword: value must be at least 5 characters long\n",
			ErrInvalidArgument, "hostname,memory,password", []string{"hostname: invalid format", "(Memory)", "(Password)", "16 MiB", "5 characters"}},
		{"please run as root\n", ErrPermission, "", []string{"root"}},
		{"no such cluster node 'pve9'\n", ErrNotFound, "node", []string{"pve9"}},
		{"unable to create CT 100 - unable to detect OS distribution\n", ErrFailed, "ostype", []string{"records ostype unmanaged", "the .conf"}},
		{"unable to get any free VMID in range [100, 1000000]\n", ErrFailed, "vmid", nil},
		{"mount points configured, but 'rootfs' not set - aborting\n", ErrInvalidArgument, "rootfs", nil},
		{"unable to parse directory volume name 'vztmpl/x.img'\n", ErrInvalidArgument, "ostemplate", []string{".tar.zst"}},
		{"Configuration file 'nodes/pve/lxc/105.conf' does not exist\n", ErrNotFound, "vmid", []string{"CT 105"}},
		{"unable to create CT 100 - something odd happened\n", ErrFailed, "", []string{"something odd", "(Raw)"}},
	} {
		e := MapError([]string{"pct", "create", "100", "local:vztmpl/x.tar.zst"}, tc.stderr, 255)
		if !errors.Is(e, tc.kind) || e.Param != tc.param {
			t.Errorf("%q: got %v (param %q), want kind %v param %q", tc.stderr, e, e.Param, tc.kind, tc.param)
		}
		for _, w := range tc.words {
			if !strings.Contains(e.Error(), w) {
				t.Errorf("%q: message %q lacks %q", tc.stderr, e.Error(), w)
			}
		}
		// A library error names Options fields, never nexcage's flags (a
		// PVE command to run, quoted in backquotes, may have its own).
		if strings.Contains(regexp.MustCompile("`[^`]*`").ReplaceAllString(e.Error(), ""), "--") {
			t.Errorf("%q: message %q names a flag", tc.stderr, e.Error())
		}
		for _, f := range e.Fields {
			if !strings.Contains(e.Error(), f) {
				t.Errorf("%q: message %q lacks its field %s", tc.stderr, e.Error(), f)
			}
		}
		if strings.Contains(e.Error(), "exit status") || !strings.Contains(e.Raw, "exit status 255") {
			t.Errorf("%q: raw output belongs in Raw only: %q / %q", tc.stderr, e.Error(), e.Raw)
		}
	}
}

func TestShellQuote(t *testing.T) {
	got := ShellQuote([]string{"pct", "create", "100", "local:vztmpl/a b.tar.zst", "--env", "A=1\x00B=it's"})
	want := `pct create 100 'local:vztmpl/a b.tar.zst' --env $'A=1\x00B=it\'s'`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// AppendRaw writes into the main section, never a snapshot's, and
// concurrent writers do not lose each other's lines.
func TestAppendRawUnderLock(t *testing.T) {
	testenv.CheckLeaks(t) // every lock file is closed again
	root := t.TempDir()
	conf := filepath.Join(root, "etc/pve/lxc/100.conf")
	os.MkdirAll(filepath.Dir(conf), 0o755)
	os.WriteFile(conf, []byte("arch: amd64\nhostname: a\n\n[snap]\narch: amd64\n"), 0o640)
	h := &Host{Root: root}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.AppendRaw(100, "", []string{"lxc.environment: N=" + string(rune('a'+i))}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	b, _ := os.ReadFile(conf)
	main, snap, _ := strings.Cut(string(b), "[snap]")
	if strings.Count(main, "lxc.environment: N=") != 8 || strings.Contains(snap, "lxc.") {
		t.Fatalf("config after 8 concurrent appends:\n%s", b)
	}
}
