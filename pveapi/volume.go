package pveapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// MoveVolume moves a container's volume (POST .../move_volume): params
// are volume and either storage (a copy; the original is kept as unusedN
// unless delete=1) or target-vmid and target-volume (a reassignment to
// another CT of the node), with digest/target-digest to refuse a config
// changed meanwhile. It returns the task's UPID.
func (c *Client) MoveVolume(ctx context.Context, node string, vmid int, params url.Values) (string, error) {
	return c.upid(ctx, request{method: http.MethodPost, path: path("nodes", node, "lxc", strconv.Itoa(vmid), "move_volume"),
		what: fmt.Sprintf("move volume %s of CT %d on node '%s'", params.Get("volume"), vmid, node), form: params})
}

// Shutdown stops a container cleanly (its stop signal), for good after
// PVE's timeout when forceStop; it returns the task's UPID.
func (c *Client) Shutdown(ctx context.Context, node string, vmid int, forceStop bool) (string, error) {
	form := url.Values{"forceStop": {FormBool(forceStop)}}
	return c.upid(ctx, request{method: http.MethodPost, path: path("nodes", node, "lxc", strconv.Itoa(vmid), "status", "shutdown"), what: fmt.Sprintf("shut down CT %d on node '%s'", vmid, node), form: form})
}

// LXCStatus is GET .../status/current.
type LXCStatus struct {
	VMID   Int    `json:"vmid"`
	Status string `json:"status"` // running, stopped
	Name   string `json:"name"`
}

// Status reads a container's current status.
func (c *Client) Status(ctx context.Context, node string, vmid int) (LXCStatus, error) {
	var s LXCStatus
	_, err := c.do(ctx, request{method: http.MethodGet, path: path("nodes", node, "lxc", strconv.Itoa(vmid), "status", "current"), what: fmt.Sprintf("read CT %d's status on node '%s'", vmid, node)}, &s)
	return s, err
}
