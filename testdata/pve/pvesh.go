package main

// pvesh: the API from the shell, for the few paths nexcage uses.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// obj is a JSON object that keeps its keys in order, as the API's
// responses are easier to read that way.
type obj []kv

type kv struct {
	k string
	v any
}

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.k)
		v, err := json.Marshal(p.v)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// outputOptions are pvesh's formatting options, valid on every call.
func outputOptions() map[string]*param {
	return map[string]*param{
		"output-format":  {typ: tString, enum: []string{"text", "json", "json-pretty", "yaml"}},
		"noborder":       boolean,
		"noheader":       boolean,
		"human-readable": boolean,
		"quiet":          boolean,
	}
}

func pveshMain(h *Host, args []string) error {
	cmd, _, err := splitCommand("pvesh", args)
	if err != nil {
		return err
	}
	switch cmd {
	case "get", "ls", "create", "set", "delete", "usage":
	default:
		return fmt.Errorf("unknown command 'pvesh %s'", cmd)
	}
	if len(args) < 2 {
		return cliError("not enough arguments", "pvesh "+cmd+" <api_path> [OPTIONS]")
	}
	path := "/" + strings.Trim(args[1], "/")
	rest := args[2:]
	ct := regexp.MustCompile(`^/nodes/([^/]+)/lxc/(\d+)(/config|/status/(?:start|stop|shutdown))?$`).FindStringSubmatch(path)
	switch {
	case cmd == "get":
		return pveshGet(h, path, rest)
	case cmd == "create" && regexp.MustCompile(`^/nodes/[^/]+/lxc$`).MatchString(path):
		return pveshCreateCT(h, strings.Split(path, "/")[2], rest)
	case ct != nil && (cmd == "delete" && ct[3] == "" || cmd == "set" && ct[3] == "/config" ||
		cmd == "create" && strings.HasPrefix(ct[3], "/status/")):
		return pveshCT(h, cmd, ct[1], ct[2], strings.TrimPrefix(ct[3], "/status/"), rest)
	}
	return fmt.Errorf("No '%s' handler defined for '%s'", cmd, path)
}

// pveshCT manages a CT of any node through the API, which is how a
// container on another node is reached (pct only sees the local node):
// DELETE /nodes/N/lxc/V, PUT .../config, POST .../status/{start,stop}.
func pveshCT(h *Host, cmd, node, vmidArg, action string, args []string) error {
	if !h.nodeExists(node) {
		return fmt.Errorf("no such cluster node '%s'", node)
	}
	on := *h
	on.Node = node
	if cmd == "set" {
		return on.setCT(append([]string{vmidArg}, args...), "")
	}
	var props map[string]*param
	if cmd == "delete" {
		props = map[string]*param{"purge": boolean, "force": boolean, "destroy-unreferenced-disks": boolean}
	} else {
		props = map[string]*param{"skiplock": boolean, "timeout": {typ: tInteger, min: num(0)}, "forceStop": boolean}
	}
	a, err := pveshArgs(h, args, props)
	if err != nil {
		return err
	}
	errs := newParamError("")
	vmid := parseVMID(errs, vmidArg, h.Version)
	if err := errs.orNil(); err != nil {
		return err
	}
	task := "vzdestroy"
	switch {
	case cmd == "delete":
		err = on.destroyCT(vmid, a.opts["force"] == "1", a.opts["destroy-unreferenced-disks"] == "1")
	case action == "start":
		task, err = "vzstart", on.startCT(node, vmid, a.opts["skiplock"] == "1")
	default:
		timeout := -1
		if action == "shutdown" {
			timeout = 60
		}
		task, err = "vz"+action, on.stopCT(vmid, a.opts["skiplock"] == "1", timeout)
	}
	if err != nil {
		return err
	}
	return printResult(upid(node, task, vmid), a.opts["output-format"])
}

// upid is a task id: UPID:node:pid:pstart:starttime:type:id:user:.
func upid(node, task string, vmid int) string {
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%d:root@pam:", node, os.Getpid(), os.Getppid(), time.Now().Unix(), task, vmid)
}

// pveshArgs parses a call's options; pvesh takes no positional arguments
// after the path and prints no usage line with parameter errors.
func pveshArgs(h *Host, args []string, props map[string]*param) (*cliArgs, error) {
	for k, v := range outputOptions() {
		props[k] = v
	}
	errs := newParamError("")
	a, err := parseCLI(args, &schema{fixed: props}, h.Version, errs)
	if err != nil {
		return nil, err
	}
	if err := errs.orNil(); err != nil {
		return nil, err
	}
	if len(a.pos) > 0 || len(a.rest) > 0 {
		return nil, cliError("too many arguments", "")
	}
	return a, nil
}

func pveshGet(h *Host, path string, args []string) error {
	var props map[string]*param
	var handler func(a *cliArgs) (any, error)
	ctRE := regexp.MustCompile(`^/nodes/([^/]+)/lxc(?:/(\d+)(/status/current|/config)?)?$`)
	switch {
	case path == "/cluster/nextid":
		props = map[string]*param{"vmid": vmidParam}
		handler = func(a *cliArgs) (any, error) { return h.nextID(a.opts["vmid"]) }
	case path == "/cluster/resources":
		props = map[string]*param{"type": {typ: tString, enum: []string{"vm", "storage", "node", "sdn"}}}
		handler = func(a *cliArgs) (any, error) { return h.resources(a.opts["type"]) }
	case path == "/storage":
		props = map[string]*param{"type": str}
		handler = func(a *cliArgs) (any, error) { return h.storageIndex(a.opts["type"]) }
	case path == "/nodes":
		props = map[string]*param{}
		handler = func(*cliArgs) (any, error) {
			nodes, err := h.nodes()
			var out []any
			for _, n := range nodes {
				out = append(out, obj{{"node", n}, {"status", "online"}, {"type", "node"}, {"id", "node/" + n}})
			}
			return out, err
		}
	case path == "/version":
		props = map[string]*param{}
		handler = func(*cliArgs) (any, error) {
			v := h.Version
			return obj{{"version", v.raw}, {"release", fmt.Sprintf("%d.%d", v.major, v.minor)}, {"repoid", "5d7f8ddc"}}, nil
		}
	case ctRE.MatchString(path):
		m := ctRE.FindStringSubmatch(path)
		props = map[string]*param{}
		handler = func(*cliArgs) (any, error) { return h.nodeCT(m[1], m[2], m[3]) }
	default:
		return fmt.Errorf("No 'get' handler defined for '%s'", path)
	}
	a, err := pveshArgs(h, args, props)
	if err != nil {
		return err
	}
	res, err := handler(a)
	if err != nil {
		return err
	}
	return printResult(res, a.opts["output-format"])
}

// nextID is /cluster/nextid: the lowest free VMID from 100 up, or a check
// that the given one is free.
func (h *Host) nextID(want string) (any, error) {
	guests, err := h.guests()
	if err != nil {
		return nil, err
	}
	used := map[int]bool{}
	for _, g := range guests {
		used[g.VMID] = true
	}
	if want != "" {
		id, _ := strconv.Atoi(want)
		if used[id] {
			e := newParamError("")
			e.add("vmid", fmt.Sprintf("VM %d already exists", id))
			return nil, e
		}
		return id, nil
	}
	for id := 100; id < 1000000; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return nil, fmt.Errorf("unable to get any free VMID in range [100, 1000000]")
}

// resources is /cluster/resources: guests of every node, storages and
// nodes.
func (h *Host) resources(typ string) (any, error) {
	out := []any{}
	if typ == "" || typ == "vm" {
		guests, err := h.guests()
		if err != nil {
			return nil, err
		}
		for _, g := range guests {
			dir := map[string]string{"lxc": "lxc", "qemu": "qemu-server"}[g.Type]
			b, err := os.ReadFile(h.path("etc/pve/nodes", g.Node, dir, strconv.Itoa(g.VMID)+".conf"))
			if err != nil {
				continue
			}
			c := parseCTConf(string(b))
			name := c.keys["hostname"]
			status := "stopped"
			if g.Type == "qemu" {
				name = c.keys["name"]
			} else {
				status = h.status(g.VMID)
			}
			tmpl := 0
			if c.keys["template"] == "1" {
				tmpl = 1
			}
			out = append(out, obj{
				{"id", g.Type + "/" + strconv.Itoa(g.VMID)}, {"vmid", g.VMID}, {"node", g.Node},
				{"name", name}, {"status", status}, {"type", g.Type}, {"template", tmpl},
			})
		}
	}
	if typ == "" || typ == "storage" {
		nodes, err := h.nodes()
		if err != nil {
			return nil, err
		}
		all, err := h.storages()
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			for _, s := range all {
				if !s.availableOn(n) || s.Disabled {
					continue
				}
				shared := 0
				if s.Shared {
					shared = 1
				}
				out = append(out, obj{
					{"id", "storage/" + n + "/" + s.ID}, {"storage", s.ID}, {"node", n},
					{"status", "available"}, {"type", "storage"}, {"plugintype", s.Type},
					{"content", strings.Join(s.Content, ",")}, {"shared", shared},
				})
			}
		}
	}
	if typ == "" || typ == "node" {
		nodes, err := h.nodes()
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			out = append(out, obj{{"id", "node/" + n}, {"node", n}, {"status", "online"}, {"type", "node"}})
		}
	}
	return out, nil
}

// storageIndex is /storage: the storage configuration.
func (h *Host) storageIndex(typ string) (any, error) {
	all, err := h.storages()
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, s := range all {
		if typ != "" && s.Type != typ {
			continue
		}
		o := obj{{"storage", s.ID}, {"type", s.Type}}
		for _, p := range s.Props {
			if p[0] == "content" || p[0] == "nodes" {
				continue
			}
			o = append(o, kv{p[0], p[1]})
		}
		o = append(o, kv{"content", strings.Join(s.Content, ",")})
		if s.Disabled {
			o = append(o, kv{"disable", 1})
		}
		if len(s.Nodes) > 0 {
			o = append(o, kv{"nodes", strings.Join(s.Nodes, ",")})
		}
		out = append(out, o)
	}
	return out, nil
}

// nodeCT serves /nodes/<node>/lxc[/<vmid>[/status/current|/config]].
func (h *Host) nodeCT(node, vmid, sub string) (any, error) {
	if !h.nodeExists(node) {
		return nil, fmt.Errorf("no such cluster node '%s'", node)
	}
	if vmid == "" {
		out := []any{}
		guests, err := h.guests()
		if err != nil {
			return nil, err
		}
		for _, g := range guests {
			if g.Node != node || g.Type != "lxc" {
				continue
			}
			c, err := h.loadConfigOn(node, g.VMID)
			if err != nil {
				continue
			}
			out = append(out, obj{{"vmid", g.VMID}, {"name", c.keys["hostname"]}, {"status", h.status(g.VMID)}, {"type", "lxc"}})
		}
		return out, nil
	}
	id, _ := strconv.Atoi(vmid)
	c, err := h.loadConfigOn(node, id)
	if err != nil {
		return nil, err
	}
	switch sub {
	case "/status/current":
		return obj{{"vmid", id}, {"name", c.keys["hostname"]}, {"status", h.status(id)}, {"type", "lxc"}}, nil
	case "/config":
		return h.configResult(c), nil
	}
	return []any{obj{{"subdir", "config"}}, obj{{"subdir", "status"}}}, nil
}

// configResult is vm_config's answer for a config as parse_pct_config
// reads it: the description decoded, the keys in Perl's sort order and,
// from PVE 9.1 (pve-container 6.0.18), the lxc.environment.runtime lines
// joined by NULs as env rather than in lxc. PVE 9.0's parser does not know
// that key: it warns and drops those lines.
func (h *Host) configResult(c *ctConf) obj {
	keys := slices.Sorted(maps.Keys(c.keys))
	if c.desc != "" {
		keys = append(keys, "description")
	}
	env := c.env()
	if len(env) > 0 && h.Version.atLeast(9, 1) {
		keys = append(keys, "env")
	}
	sort.Strings(keys)
	o := obj{}
	for _, k := range keys {
		switch k {
		case "description":
			o = append(o, kv{k, c.desc})
		case "env":
			o = append(o, kv{k, strings.Join(env, "\x00")})
		default:
			o = append(o, kv{k, c.keys[k]})
		}
	}
	var raw [][2]string
	for _, l := range c.lxc {
		if l[0] != envKey {
			raw = append(raw, l)
		}
	}
	if len(raw) > 0 {
		o = append(o, kv{"lxc", raw})
	}
	return o
}

// printResult prints an API result in pvesh's output formats. text is a
// plain table for lists (pvesh's --noborder look) and the bare value for
// scalars.
func printResult(res any, format string) error {
	switch format {
	case "json":
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Println(string(b))
		return nil
	case "json-pretty", "yaml":
		b, err := json.MarshalIndent(res, "", "   ")
		if err != nil {
			return err
		}
		fmt.Println(string(b))
		return nil
	}
	switch r := res.(type) {
	case []any:
		tw := tabwriter.NewWriter(os.Stdout, 0, 8, 1, ' ', 0)
		var cols []string
		for _, row := range r {
			for _, p := range row.(obj) {
				if !slices.Contains(cols, p.k) {
					cols = append(cols, p.k)
				}
			}
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
		for _, row := range r {
			vals := make([]string, len(cols))
			for _, p := range row.(obj) {
				for i, c := range cols {
					if c == p.k {
						vals[i] = fmt.Sprint(p.v)
					}
				}
			}
			fmt.Fprintln(tw, strings.Join(vals, "\t"))
		}
		return tw.Flush()
	case obj:
		for _, p := range r {
			fmt.Printf("%s: %v\n", p.k, p.v)
		}
		return nil
	default:
		fmt.Println(r)
		return nil
	}
}

// pveshCreateCT is POST /nodes/<node>/lxc: pct create's parameters as
// options, the CT config on that node. The container's files and process
// stay on this machine: the cluster is simulated on one host.
func pveshCreateCT(h *Host, node string, args []string) error {
	if !h.nodeExists(node) {
		return fmt.Errorf("no such cluster node '%s'", node)
	}
	props := createSchema().fixed
	props["vmid"] = vmidParam
	props["ostemplate"] = &param{typ: tString, maxLength: 255}
	s := createSchema()
	s.fixed = props
	for k, v := range outputOptions() {
		s.fixed[k] = v
	}
	errs := newParamError("")
	a, err := parseCLI(args, s, h.Version, errs)
	if err != nil {
		return err
	}
	for _, req := range []string{"ostemplate", "vmid"} {
		if !a.has(req) {
			errs.add(req, "property is missing and it is not optional")
		}
	}
	if err := errs.orNil(); err != nil {
		return err
	}
	if len(a.pos) > 0 || len(a.rest) > 0 {
		return cliError("too many arguments", "")
	}
	vmid, _ := strconv.Atoi(strings.TrimPrefix(a.opts["vmid"], "+"))
	format := a.opts["output-format"]
	for k := range outputOptions() {
		delete(a.opts, k)
	}
	err = h.createCT(&createReq{
		node: node, vmid: vmid, ostemplate: a.opts["ostemplate"], opts: a.opts,
		sshKeys: a.opts["ssh-public-keys"], out: os.Stdout, warn: os.Stderr,
	})
	if err != nil {
		return err
	}
	return printResult(upid(node, "vzcreate", vmid), format)
}
