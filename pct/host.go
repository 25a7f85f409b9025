package pct

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/pveapi"
)

// Runner runs one PVE command as an argv.
type Runner interface {
	Run(ctx context.Context, argv []string) (stdout, stderr string, code int, err error)
}

// InputRunner is a Runner that can also give a command its standard
// input: a secret such as the root password travels there, never in argv,
// which every user of the host can read in the process list.
type InputRunner interface {
	Runner
	RunInput(ctx context.Context, argv []string, stdin string) (stdout, stderr string, code int, err error)
}

// ExecRunner runs commands as processes, with a timeout each.
type ExecRunner struct {
	Timeout time.Duration // default 10 minutes (template extraction can take long)
}

func (r ExecRunner) Run(ctx context.Context, argv []string) (string, string, int, error) {
	return r.RunInput(ctx, argv, "")
}

// RunInput runs argv with stdin as its standard input (none when empty).
func (r ExecRunner) RunInput(ctx context.Context, argv []string, stdin string) (string, string, int, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0, nil
	case ctx.Err() == context.DeadlineExceeded:
		return out.String(), errb.String(), -1, newError(ErrTimeout, "", fmt.Sprintf("%s did not finish within %s", argv[0], timeout), "check the host's load and storage; the command may still be running there")
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode(), nil
	case errors.Is(err, exec.ErrNotFound):
		return "", "", -1, newError(ErrNotFound, "", fmt.Sprintf("%s is not installed here", argv[0]), "run it on a Proxmox VE host (pct, pvesm, pvesh and pveversion come with pve-manager)")
	}
	return out.String(), errb.String(), -1, err
}

// Host is a Proxmox VE host (or cluster) reached through a Runner.
type Host struct {
	Runner Runner
	// Root prefixes /etc/pve and /run/lock: "/" on a real host, the state
	// directory of a stand-in host in tests.
	Root string
	// Endpoint names a host reached through the API in check results
	// (its URL); "" says "PVE API".
	Endpoint string
	// APIUser is who the API acts as, USER@REALM (a ticket) or
	// USER@REALM!TOKENID (a token), when known: PVE lets only root@pam,
	// logged in with its password, bind host directories, so a plan
	// for anyone else refuses them before any change.
	APIUser string
	// api is set on a host reached through PVE's HTTP API
	// (NewRemoteHost): then no command runs and Root is unused.
	api *pveapi.Client
}

// NewHost returns the host this program runs on, its PVE commands run as
// processes. root prefixes /etc/pve and /run/lock; "" is "/", a real
// host's.
func NewHost(root string) *Host {
	if root == "" {
		root = "/"
	}
	return &Host{Runner: ExecRunner{}, Root: root}
}

// run runs argv and maps a failure to an *Error.
func (h *Host) run(ctx context.Context, argv ...string) (string, error) {
	return h.runInput(ctx, "", argv...)
}

// runInput is run with stdin as the command's standard input.
func (h *Host) runInput(ctx context.Context, stdin string, argv ...string) (string, error) {
	if h.api != nil {
		return "", newError(ErrInvalidArgument, "", fmt.Sprintf("%s cannot run here: the host is reached through its API", argv[0]), "run it on the host")
	}
	var out, errs string
	var code int
	var err error
	if stdin == "" {
		out, errs, code, err = h.Runner.Run(ctx, argv)
	} else if ir, ok := h.Runner.(InputRunner); ok {
		out, errs, code, err = ir.RunInput(ctx, argv, stdin)
	} else {
		return "", fmt.Errorf("%T cannot give %s its standard input", h.Runner, argv[0])
	}
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", MapError(argv, errs, code)
	}
	return out, nil
}

var reVersion = regexp.MustCompile(`pve-manager/(\d+)\.(\d+)`)

// Version is pveversion's major and minor.
type Version struct{ Major, Minor int }

// AppContainers reports PVE 9.1's entrypoint/env/cmode options.
func (v Version) AppContainers() bool { return v.Major > 9 || (v.Major == 9 && v.Minor >= 1) }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Version asks pveversion.
func (h *Host) Version(ctx context.Context) (Version, error) {
	if h.api != nil {
		return h.remoteVersion(ctx)
	}
	out, err := h.run(ctx, "pveversion")
	if err != nil {
		return Version{}, err
	}
	m := reVersion.FindStringSubmatch(out)
	if m == nil {
		return Version{}, newError(ErrFailed, "", fmt.Sprintf("cannot read the PVE version from %q", firstLine(out)), "is this a Proxmox VE host?")
	}
	maj, _ := strconv.Atoi(m[1])
	min, _ := strconv.Atoi(m[2])
	return Version{maj, min}, nil
}

// NextID asks the cluster for a free VMID. It is not reserved: a create
// may still find it taken and must retry.
func (h *Host) NextID(ctx context.Context) (int, error) {
	if h.api != nil {
		return h.api.NextID(ctx)
	}
	out, err := h.run(ctx, "pvesh", "get", "/cluster/nextid")
	if err != nil {
		return 0, err
	}
	id, err := strconv.Atoi(strings.Trim(strings.TrimSpace(out), `"`))
	if err != nil {
		return 0, newError(ErrFailed, "", fmt.Sprintf("pvesh get /cluster/nextid answered %q", firstLine(out)), "check the cluster with `pvesh get /cluster/nextid`")
	}
	return id, nil
}

// Resource is a guest of the cluster.
type Resource struct {
	ID     string `json:"id"`
	VMID   int    `json:"vmid"`
	Node   string `json:"node"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Type   string `json:"type"`
}

// Resources lists every guest of the cluster.
func (h *Host) Resources(ctx context.Context) ([]Resource, error) {
	if h.api != nil {
		return h.remoteResources(ctx)
	}
	var out []Resource
	err := h.getJSON(ctx, &out, "/cluster/resources", "--type", "vm")
	return out, err
}

// Storage is one storage of the cluster's configuration.
type Storage struct {
	Name    string `json:"storage"`
	Type    string `json:"type"`
	Content string `json:"content"`
	Disable int    `json:"disable"`
	Nodes   string `json:"nodes"`
}

// Holds reports whether the storage takes a content type.
func (s Storage) Holds(content string) bool { return pveapi.InList(s.Content, content) }

// OnNode reports whether the storage is usable on node ("" = any).
func (s Storage) OnNode(node string) bool {
	return s.Nodes == "" || node == "" || pveapi.InList(s.Nodes, node)
}

// Storages lists the cluster's storage configuration.
func (h *Host) Storages(ctx context.Context) ([]Storage, error) {
	if h.api != nil {
		return h.remoteStorages(ctx)
	}
	var out []Storage
	err := h.getJSON(ctx, &out, "/storage")
	return out, err
}

// Nodes lists the cluster's node names.
func (h *Host) Nodes(ctx context.Context) ([]string, error) {
	if h.api != nil {
		return h.remoteNodes(ctx)
	}
	var out []struct {
		Node string `json:"node"`
	}
	if err := h.getJSON(ctx, &out, "/nodes"); err != nil {
		return nil, err
	}
	names := make([]string, len(out))
	for i, n := range out {
		names[i] = n.Node
	}
	return names, nil
}

func (h *Host) getJSON(ctx context.Context, v any, path string, args ...string) error {
	argv := append([]string{"pvesh", "get", path}, args...)
	argv = append(argv, "--output-format", "json")
	out, err := h.run(ctx, argv...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return newError(ErrFailed, "", fmt.Sprintf("pvesh get %s answered something that is not JSON (%v)", path, err), fmt.Sprintf("check `pvesh get %s --output-format json` on the host", path))
	}
	return nil
}

// TemplatePath is where a template volume lives (pvesm path).
func (h *Host) TemplatePath(ctx context.Context, volid string) (string, error) {
	if h.api != nil {
		return "", newError(ErrInvalidArgument, "ostemplate", fmt.Sprintf("%s has no path here: the host is reached through its API", volid), "read the template on the host")
	}
	out, err := h.run(ctx, "pvesm", "path", volid)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// Run runs a PVE command for callers outside this package (pct exec and
// the like), mapping failures.
func (h *Host) Run(ctx context.Context, argv ...string) (string, error) { return h.run(ctx, argv...) }

// configPath is /etc/pve/lxc/VMID.conf, or the node's own directory when
// the container lives on another node of the cluster.
func (h *Host) configPath(vmid int, node string) string {
	if node != "" {
		return filepath.Join(h.Root, "etc/pve/nodes", node, "lxc", strconv.Itoa(vmid)+".conf")
	}
	return filepath.Join(h.Root, "etc/pve/lxc", strconv.Itoa(vmid)+".conf")
}

// AppendRaw adds raw lxc.* lines to a CT config under PVE's config lock
// (the same flock pct takes), at the end of the main section: pct set
// cannot write raw keys, and a bare append could race with PVE's own
// writers or land in a snapshot section.
func (h *Host) AppendRaw(vmid int, node string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	return h.withConfigLock(vmid, node, func(text string) (string, error) {
		main, rest := splitMainSection(text)
		if !strings.HasSuffix(main, "\n") {
			main += "\n"
		}
		return main + strings.Join(lines, "\n") + "\n" + rest, nil
	})
}

// withConfigLock runs fn on CT vmid's config text under PVE's config lock
// (the flock pct takes) and writes what it returns in its place.
func (h *Host) withConfigLock(vmid int, node string, fn func(string) (string, error)) error {
	lockDir := filepath.Join(h.Root, "run/lock/lxc")
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("pve-config-%d.lock", vmid)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return newError(ErrPermission, "", fmt.Sprintf("cannot open PVE's config lock for CT %d: %v", vmid, err), "run nexcage as root on the Proxmox host")
	}
	defer lf.Close()
	if err := flockTimeout(lf, 10*time.Second); err != nil {
		return newError(ErrTimeout, "", fmt.Sprintf("CT %d's config is locked by another PVE operation", vmid), "retry when it has finished")
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	path := h.configPath(vmid, node)
	old, err := os.ReadFile(path)
	if err != nil {
		return newError(ErrNotFound, "vmid", fmt.Sprintf("CT %d's config %s cannot be read: %v", vmid, path, err), "check the VMID with `pct list`")
	}
	text, err := fn(string(old))
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, []byte(text), 0o640)
}

// splitMainSection cuts a CT config into its main section and the
// snapshot sections ("[name]") after it.
func splitMainSection(text string) (main, rest string) {
	if i := strings.Index(text, "\n["); i >= 0 {
		return text[:i+1], text[i+1:]
	}
	return text, ""
}

func flockTimeout(f *os.File, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
