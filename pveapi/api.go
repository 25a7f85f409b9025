package pveapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Bool is PVE's boolean: 0/1 in JSON (sometimes a string or true/false).
type Bool bool

func (b *Bool) UnmarshalJSON(data []byte) error {
	switch strings.Trim(string(data), `"`) {
	case "1", "true":
		*b = true
	case "0", "false", "", "null":
		*b = false
	default:
		return fmt.Errorf("%s is not a boolean", clip(string(data), 40))
	}
	return nil
}

// FormBool is a boolean as PVE's form parameters take it: "1" or "0".
func FormBool(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Int is an integer PVE may send as a number or a string.
type Int int64

func (n *Int) UnmarshalJSON(data []byte) error {
	s := strings.Trim(string(data), `"`)
	if s == "null" || s == "" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Sizes come as floats from some storage plugins.
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return fmt.Errorf("%s is not an integer", clip(string(data), 40))
		}
		v = int64(f)
	}
	*n = Int(v)
	return nil
}

// VersionInfo is GET /version.
type VersionInfo struct {
	Version string `json:"version"` // "8.2.4"
	Release string `json:"release"` // "8.2"
	RepoID  string `json:"repoid"`
}

// MajorMinor reads the release's numbers; ok is false when it is not
// MAJOR.MINOR.
func (v VersionInfo) MajorMinor() (major, minor int, ok bool) {
	s := v.Release
	if s == "" {
		s = v.Version
	}
	a, b, found := strings.Cut(s, ".")
	if !found {
		return 0, 0, false
	}
	b, _, _ = strings.Cut(b, ".")
	maj, err1 := strconv.Atoi(a)
	min, err2 := strconv.Atoi(b)
	return maj, min, err1 == nil && err2 == nil
}

// Version asks the API's PVE release.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/version", what: "read the PVE version"}, &v)
	return v, err
}

// NextID asks the cluster for a free VMID. It is not reserved: a create
// may still find it taken.
func (c *Client) NextID(ctx context.Context) (int, error) {
	var id Int
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/cluster/nextid", what: "get a free VMID"}, &id)
	if err == nil && id <= 0 {
		return 0, &Error{Kind: Protocol, Method: http.MethodGet, Path: "/cluster/nextid", Msg: fmt.Sprintf("cannot get a free VMID: PVE answered %d", id), Fix: "check the cluster"}
	}
	return int(id), err
}

// Resource is one entry of GET /cluster/resources.
type Resource struct {
	ID         string `json:"id"`   // "lxc/100", "storage/pve/local", "node/pve"
	Type       string `json:"type"` // lxc, qemu, storage, node, ...
	Node       string `json:"node"`
	VMID       Int    `json:"vmid"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	Template   Bool   `json:"template"`
	Storage    string `json:"storage"`
	Content    string `json:"content"`
	PluginType string `json:"plugintype"`
	Shared     Bool   `json:"shared"`
	Disk       Int    `json:"disk"`
	MaxDisk    Int    `json:"maxdisk"`
}

// ClusterResources lists the cluster's resources of a type ("vm",
// "storage", "node"; "" for all).
func (c *Client) ClusterResources(ctx context.Context, typ string) ([]Resource, error) {
	var out []Resource
	form := url.Values{}
	if typ != "" {
		form.Set("type", typ)
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/cluster/resources", what: "list the cluster's resources", form: form}, &out)
	return out, err
}

// Node is one entry of GET /nodes.
type Node struct {
	Node   string `json:"node"`
	Status string `json:"status"` // online, offline, unknown
}

// Nodes lists the cluster's nodes.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out []Node
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/nodes", what: "list the cluster's nodes"}, &out)
	return out, err
}

// NodeStorage is one entry of GET /nodes/{node}/storage.
type NodeStorage struct {
	Storage string `json:"storage"`
	Type    string `json:"type"`
	Content string `json:"content"` // "vztmpl,rootdir,iso"
	Active  Bool   `json:"active"`
	Enabled Bool   `json:"enabled"`
	Shared  Bool   `json:"shared"`
	Total   Int    `json:"total"`
	Used    Int    `json:"used"`
	Avail   Int    `json:"avail"`
}

// Holds reports whether the storage takes a content type.
func (s NodeStorage) Holds(content string) bool { return InList(s.Content, content) }

// InList reports whether item is one of the values of a PVE list, the
// comma-separated form of a storage's content types or nodes.
func InList(list, item string) bool {
	for _, v := range strings.Split(list, ",") {
		if strings.TrimSpace(v) == item {
			return true
		}
	}
	return false
}

// NodeStorages lists a node's storages that take content ("" for all).
func (c *Client) NodeStorages(ctx context.Context, node, content string) ([]NodeStorage, error) {
	var out []NodeStorage
	form := url.Values{}
	if content != "" {
		form.Set("content", content)
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: path("nodes", node, "storage"), what: fmt.Sprintf("list the storages of node '%s'", node), form: form}, &out)
	return out, err
}

// Volume is one entry of GET /nodes/{node}/storage/{storage}/content.
type Volume struct {
	VolID   string `json:"volid"` // "local:vztmpl/alpine.tar.zst"
	Content string `json:"content"`
	Format  string `json:"format"`
	Size    Int    `json:"size"`
	CTime   Int    `json:"ctime"`
}

// StorageContent lists a storage's volumes of a content type ("" for all).
func (c *Client) StorageContent(ctx context.Context, node, storage, content string) ([]Volume, error) {
	var out []Volume
	form := url.Values{}
	if content != "" {
		form.Set("content", content)
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: path("nodes", node, "storage", storage, "content"), what: fmt.Sprintf("list storage '%s' on node '%s'", storage, node), form: form}, &out)
	return out, err
}

// upid decodes a task's UPID from an answer's data.
func (c *Client) upid(ctx context.Context, r request) (string, error) {
	var s string
	if _, err := c.do(ctx, r, &s); err != nil {
		return "", err
	}
	if !strings.HasPrefix(s, "UPID:") {
		return "", &Error{Kind: Protocol, Method: r.method, Path: unescape(r.path), Msg: fmt.Sprintf("cannot %s: PVE answered no task ID", r.what), Fix: "check that the URL is a Proxmox VE API endpoint"}
	}
	return s, nil
}

// CreateLXC creates a container (POST /nodes/{node}/lxc): params are
// pct create's options as PVE's API names them (vmid, ostemplate,
// hostname, rootfs, net0, ...). It returns the task's UPID; WaitTask
// waits for it.
func (c *Client) CreateLXC(ctx context.Context, node string, params url.Values) (string, error) {
	what := fmt.Sprintf("create a container on node '%s'", node)
	if id := params.Get("vmid"); id != "" {
		what = fmt.Sprintf("create CT %s on node '%s'", id, node)
	}
	return c.upid(ctx, request{method: http.MethodPost, path: path("nodes", node, "lxc"), what: what, form: params})
}

// LXCConfig reads a container's config (GET .../config current=1): the
// values in effect, not the pending ones PVE answers by default (a change
// to a running CT's rootfs or mount points waits for its next start);
// numbers come as their decimal text.
func (c *Client) LXCConfig(ctx context.Context, node string, vmid int) (map[string]string, error) {
	var raw map[string]json.RawMessage
	r := request{method: http.MethodGet, path: path("nodes", node, "lxc", strconv.Itoa(vmid), "config"), what: fmt.Sprintf("read CT %d's config on node '%s'", vmid, node),
		form: url.Values{"current": {"1"}}}
	if _, err := c.do(ctx, r, &raw); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
			continue
		}
		out[k] = string(bytes.TrimSpace(v))
	}
	return out, nil
}

// SetLXCConfig changes a container's config (PUT .../config); "delete"
// lists options to remove.
func (c *Client) SetLXCConfig(ctx context.Context, node string, vmid int, params url.Values) error {
	_, err := c.do(ctx, request{method: http.MethodPut, path: path("nodes", node, "lxc", strconv.Itoa(vmid), "config"), what: fmt.Sprintf("set CT %d's config on node '%s'", vmid, node), form: params}, nil)
	return err
}

// Start starts a container; it returns the task's UPID.
func (c *Client) Start(ctx context.Context, node string, vmid int) (string, error) {
	return c.upid(ctx, request{method: http.MethodPost, path: path("nodes", node, "lxc", strconv.Itoa(vmid), "status", "start"), what: fmt.Sprintf("start CT %d on node '%s'", vmid, node)})
}

// Stop stops a container at once; it returns the task's UPID.
func (c *Client) Stop(ctx context.Context, node string, vmid int) (string, error) {
	return c.upid(ctx, request{method: http.MethodPost, path: path("nodes", node, "lxc", strconv.Itoa(vmid), "status", "stop"), what: fmt.Sprintf("stop CT %d on node '%s'", vmid, node)})
}

// Destroy removes a stopped container and its volumes; purge also drops
// it from backup jobs, replication and HA. It returns the task's UPID.
func (c *Client) Destroy(ctx context.Context, node string, vmid int, purge bool) (string, error) {
	form := url.Values{}
	if purge {
		form.Set("purge", "1")
	}
	return c.upid(ctx, request{method: http.MethodDelete, path: path("nodes", node, "lxc", strconv.Itoa(vmid)), what: fmt.Sprintf("destroy CT %d on node '%s'", vmid, node), form: form})
}
