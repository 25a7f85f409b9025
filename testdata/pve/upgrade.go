package main

// pct move-volume: PVE::API2::LXC move_volume, to another storage (a copy,
// the original kept as unusedN unless --delete) or to another CT on the
// same node (a rename). nexcage's upgrade hands a freshly unpacked rootfs
// from a temporary CT to the upgraded one this way (docs/proxmox.md §8).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func pctMoveVolume(h *Host, args []string) error {
	const usage = "pct move-volume <vmid> <volume> [<storage>] [<target-vmid>] [<target-volume>] [OPTIONS]"
	errs := newParamError(usage)
	volumeKey := &param{typ: tString, format: func(s string) error {
		if s == "rootfs" || isIndexed(s, "mp") || isIndexed(s, "unused") {
			return nil
		}
		return fmt.Errorf("value '%s' does not have a value in the enumeration 'rootfs, mp0, ..., unused0, ...'", s)
	}}
	opts := map[string]*param{
		"storage":       {typ: tString, format: storageID},
		"target-vmid":   vmidParam,
		"target-volume": volumeKey,
		"delete":        boolean,
		"digest":        {typ: tString, maxLength: 40},
		"target-digest": {typ: tString, maxLength: 40},
		"bwlimit":       {typ: tNumber, min: num(0)},
	}
	a, err := parseCLI(args, &schema{fixed: opts}, h.Version, errs)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, usage)
	}
	// pct's argument list: vmid, volume, then storage, target-vmid and
	// target-volume may be positional too.
	if len(a.pos) < 2 {
		return cliError("not enough arguments", usage)
	}
	if len(a.pos) > 5 || len(a.rest) > 0 {
		return cliError("too many arguments", usage)
	}
	for i, name := range []string{"storage", "target-vmid", "target-volume"} {
		if len(a.pos) > 2+i {
			a.opts[name] = check(errs, name, a.pos[2+i], opts[name], h.Version)
		}
	}
	vmid := parseVMID(errs, a.pos[0], h.Version)
	key := check(errs, "volume", a.pos[1], volumeKey, h.Version)
	storage, target := a.opts["storage"], a.opts["target-vmid"]
	if err := errs.orNil(); err != nil {
		return err
	}
	switch {
	case storage != "" && target != "":
		e := newParamError(usage)
		e.add("storage", "either set 'storage' or 'target-vmid', but not both")
		e.add("target-vmid", "either set 'storage' or 'target-vmid', but not both")
		return e
	case storage != "":
		return h.moveToStorage(vmid, key, storage, a.opts["delete"] == "1")
	case target != "":
		tv := parseVMID(errs, target, h.Version)
		tkey := a.opts["target-volume"]
		if tkey == "" {
			tkey = key
		}
		return h.reassignVolume(vmid, key, tv, tkey)
	}
	e := newParamError(usage)
	e.add("storage", "both 'storage' and 'target-vmid' missing, either needs to be set")
	e.add("target-vmid", "both 'storage' and 'target-vmid' missing, either needs to be set")
	return e
}

// volumeDir is the directory holding a volume's files (a rootfs volume
// made by pct create is a symlink to the rootfs under the lxcpath).
func (h *Host) volumeDir(volid string) (string, error) {
	v, err := h.volume(volid)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(v.Path)
}

// moveToStorage is move_volume's $storage_realcmd: copy_volume into a new
// volume, the config pointing at it, the old one kept as unusedN.
func (h *Host) moveToStorage(vmid int, key, storage string, del bool) error {
	conf, unlock, err := h.lockedConfig(vmid, true)
	if err != nil {
		return err
	}
	defer unlock()
	if h.running(vmid) {
		return fmt.Errorf("cannot move volumes of a running container")
	}
	if isIndexed(key, "unused") {
		return fmt.Errorf("cannot move volume '%s', only configured volumes can be moved to another storage", key)
	}
	val, ok := conf.keys[key]
	if !ok {
		return fmt.Errorf("unable to parse volume ID '%s'", key)
	}
	m := parseMP(val)
	if mpType(m.Volume) != "volume" {
		return fmt.Errorf("cannot move volume '%s' - not a storage volume", key)
	}
	s, err := h.rootdirStorage(storage, h.Node)
	if err != nil {
		return err
	}
	src, err := h.volumeDir(m.Volume)
	if err != nil {
		return err
	}
	newVol, err := h.allocDisk(s, vmid, conf.keys["unprivileged"] == "1", "")
	if err != nil {
		return err
	}
	dst, _ := h.volumeDir(newVol)
	if out, err := exec.Command("cp", "-a", "--", src+"/.", dst+"/").CombinedOutput(); err != nil {
		h.freeDisk(newVol)
		return fmt.Errorf("copy volume '%s' failed: %s", m.Volume, strings.TrimSpace(string(out)))
	}
	old := m.Volume
	m.Volume = newVol
	conf.keys[key] = m.String()
	if del {
		if err := h.freeDisk(old); err != nil {
			return err
		}
	} else {
		conf.addUnused(old)
	}
	return h.writeConfig(h.Node, vmid, conf)
}

// reassignVolume is move_volume's $volume_reassignfn with PVE's checks
// ($load_and_check_reassign_configs): the volume is renamed to the target
// CT's name and moves from one config to the other.
func (h *Host) reassignVolume(vmid int, key string, target int, tkey string) error {
	if key == "rootfs" || tkey == "rootfs" {
		return fmt.Errorf("Cannot move to/from 'rootfs'")
	}
	if isIndexed(key, "unused") && !isIndexed(tkey, "unused") {
		return fmt.Errorf("Moving an unused volume to a used one is not possible")
	}
	src, ok, err := h.findGuest(vmid)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("could not find CT %d", vmid)
	}
	dst, ok, err := h.findGuest(target)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("could not find CT %d", target)
	}
	if src.Node != dst.Node {
		return fmt.Errorf("Both containers need to be on the same node (%s != %s)", src.Node, dst.Node)
	}
	// load_and_check_reassign_configs: each config loaded and checked
	// for a lock in turn, then neither may be a template.
	sconf, unlock, err := h.lockedConfig(vmid, true)
	if err != nil {
		return err
	}
	defer unlock()
	tconf := sconf
	if target != vmid {
		var unlockT func()
		if tconf, unlockT, err = h.lockedConfig(target, true); err != nil {
			return err
		}
		defer unlockT()
	}
	if sconf.keys["template"] == "1" || tconf.keys["template"] == "1" {
		return fmt.Errorf("Can't move volumes from or to template CT")
	}
	val, ok := sconf.keys[key]
	if !ok {
		return fmt.Errorf("volume '%s' for container '%d' does not exist", key, vmid)
	}
	if _, used := tconf.keys[tkey]; used {
		return fmt.Errorf("Target volume key '%s' is already in use for container '%d'", tkey, target)
	}
	m := parseMP(val)
	if mpType(m.Volume) != "volume" {
		return fmt.Errorf("Cannot move a bindmount or device mount to another container")
	}
	if h.running(vmid) && !isIndexed(key, "unused") {
		return fmt.Errorf("Cannot move in-use volume while the source CT is running - detach or shutdown first")
	}
	sid, _, err := parseVolumeID(m.Volume)
	if err != nil {
		return err
	}
	s, err := h.storage(sid)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "moving volume '%s' from container '%d' to '%d'\n", key, vmid, target)
	// rename_volume: the target's next free name on the same storage; a
	// symlinked rootfs volume takes its directory along.
	from, err := h.volumeDir(m.Volume)
	if err != nil {
		return err
	}
	v, _ := h.volume(m.Volume)
	var newVol, newPath string
	for n := 0; n < 1000 && newVol == ""; n++ {
		name := fmt.Sprintf("vm-%d-disk-%d", target, n)
		p := filepath.Join(h.simDir(s.ID), name)
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			newVol, newPath = s.ID+":"+name, p
		}
	}
	if newVol == "" {
		return fmt.Errorf("unable to allocate an image name for VM %d in storage '%s'", target, s.ID)
	}
	if err := os.Rename(from, newPath); err != nil {
		return fmt.Errorf("rename volume '%s' failed: %v", m.Volume, err)
	}
	if v.Path != from {
		os.Remove(v.Path) // the symlink
	}
	delete(sconf.keys, key)
	m.Volume = newVol
	if isIndexed(tkey, "unused") {
		tconf.keys[tkey] = newVol
	} else {
		tconf.keys[tkey] = m.String()
	}
	if err := h.writeConfig(h.Node, vmid, sconf); err != nil {
		return err
	}
	if target != vmid {
		if err := h.writeConfig(h.Node, target, tconf); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "target container '%d' updated with '%s'\n", target, tkey)
	return nil
}
