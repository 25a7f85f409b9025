package main

// pct: PVE::CLI::pct, for the containers of the local node.

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/lxc"
)

// splitCommand is PVE::CLIHandler's reading of a tool's command line: the
// command, then its arguments.
func splitCommand(tool string, args []string) (cmd string, rest []string, err error) {
	if len(args) == 0 {
		return "", nil, errors.New("ERROR: no command specified\nUSAGE: " + tool + " <COMMAND> [ARGS] [OPTIONS]")
	}
	return args[0], args[1:], nil
}

func pctMain(h *Host, args []string) error {
	cmd, args, err := splitCommand("pct", args)
	if err != nil {
		return err
	}
	switch cmd {
	case "create":
		return pctCreate(h, args)
	case "start":
		return pctVMIDCommand(h, args, "pct start <vmid> [OPTIONS]", map[string]*param{"skiplock": boolean, "debug": boolean}, func(vmid int, a *cliArgs) error {
			return h.startCT(h.Node, vmid, a.opts["skiplock"] == "1")
		})
	case "stop", "shutdown":
		opts := map[string]*param{"skiplock": boolean, "timeout": {typ: tInteger, min: num(0)}, "forceStop": boolean, "overrule-shutdown": boolean}
		return pctVMIDCommand(h, args, "pct "+cmd+" <vmid> [OPTIONS]", opts, func(vmid int, a *cliArgs) error {
			timeout := -1 // stop kills at once
			if cmd == "shutdown" {
				// A clean shutdown: init gets lxc.signal.halt and 60
				// seconds (--timeout), as PVE's vm_shutdown.
				timeout = 60
				if t, ok := a.opts["timeout"]; ok {
					timeout, _ = strconv.Atoi(t)
				}
			}
			return h.stopCT(vmid, a.opts["skiplock"] == "1", timeout)
		})
	case "status":
		return pctVMIDCommand(h, args, "pct status <vmid> [OPTIONS]", map[string]*param{"verbose": boolean}, func(vmid int, _ *cliArgs) error {
			if _, err := h.loadConfig(vmid); err != nil {
				return err
			}
			fmt.Printf("status: %s\n", h.status(vmid))
			return nil
		})
	case "config":
		opts := map[string]*param{"current": boolean, "snapshot": str}
		return pctVMIDCommand(h, args, "pct config <vmid> [OPTIONS]", opts, func(vmid int, _ *cliArgs) error {
			conf, err := h.loadConfig(vmid)
			if err != nil {
				return err
			}
			fmt.Print(pctConfigText(h.configResult(conf)))
			return nil
		})
	case "destroy":
		opts := map[string]*param{"purge": boolean, "force": boolean, "destroy-unreferenced-disks": boolean}
		return pctVMIDCommand(h, args, "pct destroy <vmid> [OPTIONS]", opts, func(vmid int, a *cliArgs) error {
			return h.destroyCT(vmid, a.opts["force"] == "1", a.opts["destroy-unreferenced-disks"] == "1")
		})
	case "exec":
		return pctExec(h, args)
	case "list":
		return pctList(h, args)
	case "set":
		return pctSet(h, args)
	case "move-volume", "move_volume":
		return pctMoveVolume(h, args)
	case "mount":
		return pctMount(h, args)
	case "unmount":
		return pctUnmount(h, args)
	default:
		return fmt.Errorf("unknown command 'pct %s'", cmd)
	}
}

// parsePositional is parseCLI for a command taking exactly n positional
// arguments, with PVE's usage errors when there are fewer or more.
func parsePositional(args []string, s *schema, v version, errs *paramError, usage string, n int) (*cliArgs, error) {
	a, err := parseCLI(args, s, v, errs)
	if err != nil {
		return nil, fmt.Errorf("%v\n%s", err, usage)
	}
	if len(a.pos) < n {
		return nil, cliError("not enough arguments", usage)
	}
	if len(a.pos) > n || len(a.rest) > 0 {
		return nil, cliError("too many arguments", usage)
	}
	return a, nil
}

// pctVMIDCommand parses "<vmid> [OPTIONS]" and runs fn.
func pctVMIDCommand(h *Host, args []string, usage string, opts map[string]*param, fn func(int, *cliArgs) error) error {
	errs := newParamError(usage)
	a, err := parsePositional(args, &schema{fixed: opts}, h.Version, errs, usage, 1)
	if err != nil {
		return err
	}
	vmid := parseVMID(errs, a.pos[0], h.Version)
	if err := errs.orNil(); err != nil {
		return err
	}
	return fn(vmid, a)
}

func pctCreate(h *Host, args []string) error {
	const usage = "pct create <vmid> <ostemplate> [OPTIONS]"
	args, err := interactivePassword(args, os.Stdin)
	if err != nil {
		return err
	}
	errs := newParamError(usage)
	a, err := parsePositional(args, createSchema(), h.Version, errs, usage, 2)
	if err != nil {
		return err
	}
	vmid := parseVMID(errs, a.pos[0], h.Version)
	check(errs, "ostemplate", a.pos[1], &param{typ: tString, maxLength: 255}, h.Version)
	if err := errs.orNil(); err != nil {
		return err
	}
	// pct's parameter mapping: --ssh-public-keys names a file whose
	// contents are the keys.
	var keys string
	if file, ok := a.opts["ssh-public-keys"]; ok {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("can't open '%s' - %s", file, errnoText(err))
		}
		keys = string(b)
	}
	return h.createCT(&createReq{
		node: h.Node, vmid: vmid, ostemplate: a.pos[1], opts: a.opts, sshKeys: keys,
		password: a.opts["password"], usage: usage, out: os.Stdout, warn: os.Stderr,
	})
}

// pctConfigText is how `pct config` prints vm_config's answer: "key:
// value" lines in the answer's order, the description encode_text'ed onto
// one line (its newlines as %0A), env with its NULs as they are, then the
// raw lxc keys. So it is not the config file: no "#" lines, and from PVE
// 9.1 the environment as one env line.
func pctConfigText(res obj) string {
	var b strings.Builder
	var raw [][2]string
	for _, p := range res {
		switch v := p.v.(type) {
		case [][2]string:
			raw = v
		case string:
			if p.k == "description" {
				v = lxc.EncodeText(v)
			}
			b.WriteString(p.k + ": " + v + "\n")
		}
	}
	for _, l := range raw {
		b.WriteString(l[0] + ": " + l[1] + "\n")
	}
	return b.String()
}

// startLock is vm_start's and vm_stop's lock check, the same in pve-container
// 6.0.9, 6.0.18 and 6.1.10: skiplock or the 'mounted' lock that `pct mount`
// sets lets the CT start and stop; any other lock refuses.
func startLock(c *ctConf, skiplock bool) error {
	if skiplock || c.keys["lock"] == "mounted" {
		return nil
	}
	return checkLock(c)
}

// checkLock is check_lock: a locked CT refuses most operations.
func checkLock(c *ctConf) error {
	if l := c.keys["lock"]; l != "" {
		return fmt.Errorf("CT is locked (%s)", l)
	}
	return nil
}

// startCT is vm_start: the CT config becomes an LXC config (as
// update_lxc_config writes it) and lxc-start runs it.
func (h *Host) startCT(node string, vmid int, skiplock bool) error {
	conf, err := h.loadConfigOn(node, vmid)
	if err != nil {
		return err
	}
	if err := startLock(conf, skiplock); err != nil {
		return err
	}
	if conf.keys["template"] == "1" {
		return errors.New("you can't start a CT if it's a template")
	}
	if h.running(vmid) {
		return fmt.Errorf("CT %d already running", vmid)
	}
	failed := func(err error) error {
		return fmt.Errorf("%v\nstartup for container '%d' failed", err, vmid)
	}
	raw, err := os.ReadFile(h.configPath(node, vmid))
	if err != nil {
		return err
	}
	// The config must be one this PVE release accepts, raw lxc.* keys
	// included: lxc.ParseFor's verdicts are proven equal to PVE's own
	// (lxc TestConfigModelAgreesWithPVE).
	lc, err := lxc.ParseFor(string(raw), h.Version.container())
	if err != nil {
		var pe *lxc.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("vm %d - unable to parse config: %s (%s)", vmid, pe.Text, pe.Msg)
		}
		return err
	}
	// The rootfs is the rootfs volume's directory: the one pct create
	// unpacked into, or another one `pct set --rootfs` named.
	rootDir, err := h.volumeDir(parseMP(conf.keys["rootfs"]).Volume)
	if err != nil {
		return failed(fmt.Errorf("rootfs volume '%s' does not exist", conf.keys["rootfs"]))
	}
	// Storage volumes are directories here: bind-mount them like binds.
	for i, m := range lc.MountPoints {
		if mpType(m.Volume) == "volume" {
			v, err := h.volume(m.Volume)
			if err != nil {
				return failed(err)
			}
			if _, err := os.Stat(v.Path); err != nil {
				return failed(fmt.Errorf("volume '%s' does not exist", m.Volume))
			}
			if m.KeepAttrs {
				if err := keepAttrs(rootDir, m.Path, v.Path); err != nil {
					return failed(err)
				}
			}
			lc.MountPoints[i].Volume = v.Path
			continue
		}
		if err := checkBindSource(m.Volume); err != nil {
			return failed(err)
		}
	}
	// The pre-start hook refreshes hostname, network and DNS.
	root := newRootfs(rootDir, conf.keys["unprivileged"] == "1")
	if err := root.setupRootfs(conf, conf.keys["ostype"], "", false); err != nil {
		return failed(err)
	}
	text, err := pvetest.LXCConfig(lc, strconv.Itoa(vmid), rootDir)
	if err != nil {
		return failed(err)
	}
	if err := os.WriteFile(filepath.Join(h.ctDir(vmid), "config"), []byte(text), 0o644); err != nil {
		return failed(err)
	}
	if err := h.container(vmid).Start(context.Background()); err != nil {
		return failed(err)
	}
	return nil
}

// keepAttrs is mountpoint_insert_staged's keepattrs (pve-container
// 6.1.0 on): at every mount, the volume's root takes the uid, gid and
// mode of the directory it is mounted on in the rootfs, if that exists.
// PVE walks the path without following symlinks; so does this.
func keepAttrs(rootDir, mp, volDir string) error {
	p := rootDir
	for _, c := range strings.Split(strings.Trim(filepath.Clean(mp), "/"), "/") {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // PVE creates it, owned by the CT's root: nothing to inherit
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("mount point %s: %s is not a directory", mp, strings.TrimPrefix(p, rootDir))
		}
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(volDir, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("failed to propagate uid and gid to mountpoint: %v", err)
	}
	if err := os.Chmod(volDir, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return fmt.Errorf("failed to propagate access mode to mountpoint: %v", err)
	}
	return nil
}

// stopCT is vm_stop: an immediate stop.
func (h *Host) stopCT(vmid int, skiplock bool, timeout int) error {
	conf, err := h.loadConfig(vmid)
	if err != nil {
		return err
	}
	if err := startLock(conf, skiplock); err != nil {
		return err
	}
	if !h.running(vmid) {
		return fmt.Errorf("CT %d not running", vmid)
	}
	if timeout >= 0 {
		return h.container(vmid).Shutdown(context.Background(), time.Duration(timeout)*time.Second)
	}
	return h.container(vmid).Stop(context.Background())
}

// destroyCT is destroy_vm: refuse a running CT, then remove its volumes,
// its rootfs and its config under the config lock.
func (h *Host) destroyCT(vmid int, force, unreferenced bool) error {
	conf, err := h.loadConfig(vmid)
	if err != nil {
		return err
	}
	if conf.keys["protection"] == "1" {
		return fmt.Errorf("can't remove CT %d - protection mode enabled", vmid)
	}
	running := fmt.Errorf("CT %d is running - destroy failed", vmid)
	if h.running(vmid) {
		if !force {
			return running
		}
		if err := h.container(vmid).Stop(context.Background()); err != nil {
			return err
		}
	}
	conf, unlock, err := h.lockedConfig(vmid, true)
	if err != nil {
		return err
	}
	defer unlock()
	if h.running(vmid) {
		return running
	}
	for _, v := range conf.volumes() {
		if err := h.freeDisk(v); err != nil {
			return err
		}
	}
	if unreferenced {
		h.freeUnreferenced(vmid)
	}
	if err := os.RemoveAll(h.ctDir(vmid)); err != nil {
		return err
	}
	return os.Remove(h.configPath(h.Node, vmid))
}

// freeUnreferenced removes every volume of the VMID on every storage.
func (h *Host) freeUnreferenced(vmid int) {
	all, _ := h.storages()
	for _, s := range all {
		matches, _ := filepath.Glob(filepath.Join(h.simDir(s.ID), fmt.Sprintf("*-%d-disk-*", vmid)))
		for _, m := range matches {
			os.RemoveAll(m)
		}
	}
}

// pctExec replaces itself with lxc-attach, so the command's stdio and exit
// status are the caller's.
func pctExec(h *Host, args []string) error {
	const usage = "pct exec <vmid> [<extra-args>] [OPTIONS]"
	errs := newParamError(usage)
	// Everything after the vmid is the command; "--" is optional when the
	// command has no dash options.
	var vmidArg string
	var cmd []string
	if len(args) > 0 && args[0] != "--" {
		vmidArg, args = args[0], args[1:]
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	cmd = args
	if vmidArg == "" {
		return cliError("not enough arguments", usage)
	}
	vmid := parseVMID(errs, vmidArg, h.Version)
	if err := errs.orNil(); err != nil {
		return err
	}
	if _, err := h.loadConfig(vmid); err != nil {
		return err
	}
	if !h.running(vmid) {
		return fmt.Errorf("CT %d not running", vmid)
	}
	if len(cmd) == 0 {
		return errors.New("missing command")
	}
	bin, err := exec.LookPath("lxc-attach")
	if err != nil {
		return err
	}
	argv := append([]string{"lxc-attach", "-P", h.lxcPath(), "-n", strconv.Itoa(vmid), "--clear-env", "--keep-var", "TERM", "--"}, cmd...)
	return syscall.Exec(bin, argv, os.Environ())
}

// pctList prints the local node's CTs like PVE::CLI::pct's list.
func pctList(h *Host, args []string) error {
	if len(args) > 0 {
		return cliError("too many arguments", "pct list")
	}
	guests, err := h.guests()
	if err != nil {
		return err
	}
	const format = "%-10s %-10s %-12s %-20s\n"
	fmt.Printf(format, "VMID", "Status", "Lock", "Name")
	for _, g := range guests {
		if g.Node != h.Node || g.Type != "lxc" {
			continue
		}
		c, err := h.loadConfig(g.VMID)
		if err != nil {
			continue
		}
		fmt.Printf(format, strconv.Itoa(g.VMID), h.status(g.VMID), c.keys["lock"], c.keys["hostname"])
	}
	return nil
}

// pctSet is update_vm: option changes under the config lock.
func pctSet(h *Host, args []string) error {
	return h.setCT(args, "pct set <vmid> [OPTIONS]")
}

// setCT runs update_vm for "<vmid> [OPTIONS]" on h.Node.
func (h *Host) setCT(args []string, usage string) error {
	errs := newParamError(usage)
	a, err := parsePositional(args, setSchema(), h.Version, errs, usage, 1)
	if err != nil {
		return err
	}
	vmid := parseVMID(errs, a.pos[0], h.Version)
	deletes := splitList(a.opts["delete"])
	for _, d := range deletes {
		if a.has(d) {
			errs.add("delete", fmt.Sprintf("you can't use '-%s' and -delete %s' at the same time", d, d))
		}
		if d == "rootfs" {
			errs.add("delete", "unable to delete required option 'rootfs'")
		}
	}
	if err := errs.orNil(); err != nil {
		return err
	}
	if len(a.order) == 0 {
		return errors.New("no options specified")
	}

	unlock, err := h.lockConfig(vmid)
	if err != nil {
		return err
	}
	defer unlock()
	raw, err := os.ReadFile(h.configPath(h.Node, vmid))
	if err != nil {
		return h.errNoConfig(h.Node, vmid)
	}
	if d := a.opts["digest"]; d != "" {
		sum := sha1.Sum(raw)
		if hex.EncodeToString(sum[:]) != d {
			return errors.New("detected modified configuration - file changed by other user? Try again.")
		}
	}
	conf := parseCTConf(string(raw))
	if err := checkLock(conf); err != nil {
		return err
	}
	unprivileged := conf.keys["unprivileged"] == "1"

	// detach keeps a storage volume that leaves a mount point as unusedN.
	detach := func(key string) {
		old, ok := conf.keys[key]
		if !ok {
			return
		}
		// Only an mpN: vmconfig_apply_pending copies a new rootfs into
		// the config as it is (apply_pending_mountpoint is for mpN).
		if vol := parseMP(old).Volume; isIndexed(key, "mp") && mpType(vol) == "volume" {
			conf.addUnused(vol)
		}
	}
	for _, d := range deletes {
		switch {
		case d == "description":
			conf.desc = ""
		case d == "env":
			conf.setEnv(nil)
		case isIndexed(d, "mp"):
			detach(d)
			delete(conf.keys, d)
		case isIndexed(d, "unused"):
			if vol, ok := conf.keys[d]; ok {
				if err := h.freeDisk(vol); err != nil {
					return err
				}
			}
			delete(conf.keys, d)
		default:
			delete(conf.keys, d)
		}
	}
	for _, k := range a.order {
		v := a.opts[k]
		switch {
		case k == "delete" || k == "revert" || k == "digest":
		case k == "description":
			conf.setDescription(v)
		case k == "env":
			conf.setEnv(strings.Split(v, "\x00"))
		case isIndexed(k, "mp") || k == "rootfs":
			m := parseMP(v)
			if old, ok := conf.keys[k]; ok && parseMP(old).Volume == m.Volume {
				conf.keys[k] = m.String() // same volume, other options
				continue
			}
			if nv := newVolumeRE.FindStringSubmatch(m.Volume); nv != nil {
				s, err := h.storage(nv[1])
				if err != nil {
					return err
				}
				if err := s.checkEnabled(h.Node); err != nil {
					return err
				}
				if !s.hasContent("rootdir") {
					e := newParamError(usage)
					e.add("storage", fmt.Sprintf("storage '%s' does not support container directories", s.ID))
					return e
				}
				volid, err := h.allocDisk(s, vmid, unprivileged, "")
				if err != nil {
					return err
				}
				size, _ := strconv.ParseFloat(nv[2], 64)
				m.Volume = volid
				m.set("size", formatSize(size))
			}
			detach(k)
			conf.keys[k] = m.String()
		case isIndexed(k, "net"):
			// An interface keeps its MAC address unless a new one is given.
			if old := conf.keys[k]; !strings.Contains(v, "hwaddr=") && strings.Contains(old, "hwaddr=") {
				for _, part := range strings.Split(old, ",") {
					if strings.HasPrefix(part, "hwaddr=") {
						v += "," + part
					}
				}
			}
			conf.keys[k] = normalizeNet(v)
		default:
			conf.keys[k] = v
		}
	}
	return h.writeConfig(h.Node, vmid, conf)
}

// interactivePassword is pct's pve-password parameter mapping
// (PVE::CLIHandler's standard mapping, an "interactive" one): Getopt takes
// --password with an optional value, and an empty one ("--password=", or a
// bare --password before another option or at the end) has
// PVE::PTY::get_confirmed_password read it twice from stdin, a line each
// when stdin is not a terminal. The value then takes the schema's checks.
func interactivePassword(args []string, stdin io.Reader) ([]string, error) {
	out := append([]string(nil), args...)
	var rd *bufio.Reader
	line := func() (string, error) {
		if rd == nil {
			rd = bufio.NewReader(stdin)
		}
		l, err := rd.ReadString('\n')
		if err != nil && l == "" {
			return "", errors.New("EOF while reading password")
		}
		return strings.TrimSuffix(l, "\n"), nil
	}
	for i, a := range out {
		if a == "--" {
			break
		}
		name := strings.TrimLeft(a, "-")
		empty := name == "password=" ||
			(name == "password" && (i+1 == len(out) || strings.HasPrefix(out[i+1], "-")))
		if !strings.HasPrefix(a, "-") || !empty {
			continue
		}
		pw1, err := line()
		if err != nil {
			return nil, err
		}
		pw2, err := line()
		if err != nil {
			return nil, err
		}
		if pw1 != pw2 {
			return nil, errors.New("passwords do not match")
		}
		out[i] = "--password=" + pw1
	}
	return out, nil
}
