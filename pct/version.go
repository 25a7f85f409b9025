package pct

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/nexcage/nexcage/lxc"
)

var rePackageContainer = regexp.MustCompile(`(?m)^pve-container: (\S+)`)

// ContainerVersion is the host's pve-container release, from `pveversion
// -v`: it, not pve-manager's version, decides which config keys PVE
// parses. A host that does not list it is taken to have the oldest release
// its PVE version shipped with (the one whose keys are surely known).
func (h *Host) ContainerVersion(ctx context.Context, v Version) (lxc.PVEContainer, error) {
	if h.api != nil {
		// The API does not list package versions: the release this PVE
		// version shipped with is the one whose keys are surely known.
		return ContainerFor(v), nil
	}
	out, err := h.run(ctx, "pveversion", "-v")
	if err != nil {
		return lxc.PVEContainer{}, err
	}
	if m := rePackageContainer.FindStringSubmatch(out); m != nil {
		if c, err := lxc.ParsePVEContainer(m[1]); err == nil {
			return c, nil
		}
	}
	return ContainerFor(v), nil
}

// knownVersions are the PVE versions nexcage knows, oldest first, with
// the pve-container release each shipped with: the one table both
// ContainerFor and the CLI's --pve-version read.
var knownVersions = []struct {
	pve       Version
	container lxc.PVEContainer
}{
	{Version{9, 0}, lxc.PVE90},
	{Version{9, 1}, lxc.PVE91},
	{Version{9, 2}, lxc.PVE92},
}

// KnownVersions are the PVE versions nexcage knows ("9.0", ...), oldest
// first.
func KnownVersions() []string {
	var vs []string
	for _, k := range knownVersions {
		vs = append(vs, k.pve.String())
	}
	return vs
}

// ContainerFor is the pve-container release a PVE version shipped with:
// for one nexcage does not know, that of the newest known version not
// after it (the oldest known for an older one).
func ContainerFor(v Version) lxc.PVEContainer {
	c := knownVersions[0].container
	for _, k := range knownVersions {
		if v.Major > k.pve.Major || v.Major == k.pve.Major && v.Minor >= k.pve.Minor {
			c = k.container
		}
	}
	return c
}

// ParseVersion reads a "9.1" (or "9.1.2") PVE version.
func ParseVersion(s string) (Version, error) {
	var v Version
	var patch int
	if n, _ := fmt.Sscanf(s, "%d.%d.%d", &v.Major, &v.Minor, &patch); n < 2 || v.Major < 1 {
		return v, newError(ErrInvalidArgument, "pve-version", fmt.Sprintf("%q is not a PVE version like 9.1", s), "write MAJOR.MINOR, e.g. 9.0, 9.1 or 9.2")
	}
	return v, nil
}

// OfflineRunner answers the questions a deploy plan asks of a host as a
// freshly installed PVE of the given version would (storages local and
// local-lvm, no guests, node "pve"), so that `deploy --dry-run
// --pve-version` previews a plan off a Proxmox host. It runs nothing:
// any other command is an error.
type OfflineRunner struct {
	PVE Version
	// Node is the node a --node plan names, accepted as a member.
	Node string
}

func (r OfflineRunner) Run(_ context.Context, argv []string) (string, string, int, error) {
	j := func(v any) (string, string, int, error) {
		b, _ := json.Marshal(v)
		return string(b), "", 0, nil
	}
	cmd := strings.Join(argv, " ")
	switch {
	case cmd == "pveversion":
		return fmt.Sprintf("pve-manager/%s.0/offline (running kernel: none)\n", r.PVE), "", 0, nil
	case cmd == "pveversion -v":
		return fmt.Sprintf("pve-manager: %s.0 (running version: %s.0/offline)\npve-container: %s\n", r.PVE, r.PVE, ContainerFor(r.PVE)), "", 0, nil
	case strings.HasPrefix(cmd, "pvesh get /storage "):
		return j([]Storage{
			{Name: "local", Type: "dir", Content: "vztmpl,iso,backup"},
			{Name: "local-lvm", Type: "lvmthin", Content: "rootdir,images"},
		})
	case strings.HasPrefix(cmd, "pvesh get /nodes "):
		nodes := []map[string]string{{"node": "pve"}}
		if r.Node != "" && r.Node != "pve" {
			nodes = append(nodes, map[string]string{"node": r.Node})
		}
		return j(nodes)
	case strings.HasPrefix(cmd, "pvesh get /cluster/resources "):
		return "[]", "", 0, nil
	case cmd == "pvesh get /cluster/nextid":
		return "\"100\"\n", "", 0, nil
	case len(argv) == 3 && argv[0] == "pvesm" && argv[1] == "path" && strings.HasPrefix(argv[2], "local:vztmpl/"):
		return path.Join("/var/lib/vz/template/cache", strings.TrimPrefix(argv[2], "local:vztmpl/")) + "\n", "", 0, nil
	}
	return "", fmt.Sprintf("offline plan: %s cannot be answered without a Proxmox host\n", cmd), 2, nil
}

// OfflineHost is a host for plans only, of PVE version v.
func OfflineHost(v Version, node string) *Host {
	return &Host{Runner: OfflineRunner{PVE: v, Node: node}, Root: "/nonexistent"}
}
