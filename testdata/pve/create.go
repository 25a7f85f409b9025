package main

// Creating a container: PVE::API2::LXC create_vm, as reached through
// `pct create` and `pvesh create /nodes/<node>/lxc`.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nexcage/nexcage/internal/pvetest"
)

// createReq is a validated create request.
type createReq struct {
	node       string
	vmid       int
	ostemplate string
	opts       map[string]string // checked options, booleans as 0/1
	sshKeys    string            // the keys themselves (pct reads the file)
	password   string            // root's password, set in the rootfs
	usage      string            // appended to parameter errors (pct only)
	out        io.Writer         // task output
	warn       io.Writer         // task warnings
}

// notConfigKeys are create parameters that do not end up in the config.
var notConfigKeys = map[string]bool{
	"password": true, "ssh-public-keys": true, "storage": true, "start": true, "pool": true,
	"unprivileged": true, "force": true, "restore": true, "unique": true,
	"ignore-unpack-errors": true, "bwlimit": true, "env": true, "description": true,
	"vmid": true, "ostemplate": true,
}

// createCT runs the checks create_vm does before its worker, then the
// worker. Errors before the worker are PVE's plain messages; errors in the
// worker are "unable to create CT <vmid> - <reason>" and undo everything.
func (h *Host) createCT(r *createReq) error {
	o := r.opts
	if o["restore"] == "1" {
		return errors.New("the PVE stand-in does not simulate restoring backups (--restore)")
	}
	if err := h.checkVMIDUnused(r.vmid); err != nil {
		return err
	}
	archive, err := h.templatePath(r.node, r.ostemplate)
	if err != nil {
		return err
	}

	storage := o["storage"]
	if storage == "" {
		storage = "local"
	}
	// rootfs and mpN: a bare number means a new volume on the default
	// storage.
	mps := map[string]mpValue{}
	for k, v := range o {
		if k != "rootfs" && !isIndexed(k, "mp") {
			continue
		}
		m := parseMP(v)
		if sizeRE.MatchString(m.Volume) {
			m.Volume = storage + ":" + m.Volume
		}
		mps[k] = m
	}
	if _, ok := mps["rootfs"]; !ok && len(mps) > 0 {
		return errors.New("mount points configured, but 'rootfs' not set - aborting")
	}
	checkStorage := func(sid string) error {
		_, err := h.rootdirStorage(sid, r.node)
		// create_vm raises this one as a parameter exception.
		var nr noRootdirError
		if errors.As(err, &nr) {
			e := newParamError(r.usage)
			e.add("storage", nr.Error())
			return e
		}
		return err
	}
	for _, k := range sortedMountKeys(mps) {
		m := mps[k]
		switch mpType(m.Volume) {
		case "volume":
			sid, _, err := parseVolumeID(m.Volume)
			if err != nil {
				return err
			}
			if err := checkStorage(sid); err != nil {
				return err
			}
		case "bind":
			if k == "rootfs" {
				return errors.New("the PVE stand-in supports only storage volumes as rootfs")
			}
		}
	}
	if _, ok := mps["rootfs"]; !ok {
		if err := checkStorage(storage); err != nil {
			return err
		}
		mps["rootfs"] = mpValue{Volume: storage + ":4"} // defaults to 4GB
	}

	unprivileged := o["unprivileged"] != "0" // PVE 9 creates unprivileged CTs by default
	emsg := func(err error) error { return fmt.Errorf("unable to create CT %d - %v", r.vmid, err) }

	// The worker runs under the config lock; the config is reserved first
	// (create_and_lock_config) so that a concurrent create of the same
	// VMID fails.
	unlock, err := h.lockConfig(r.vmid)
	if err != nil {
		return emsg(err)
	}
	if err := h.checkVMIDUnused(r.vmid); err != nil {
		unlock()
		return emsg(err)
	}
	conf := &ctConf{keys: map[string]string{"lock": "create"}}
	if err := h.writeConfig(r.node, r.vmid, conf); err != nil {
		unlock()
		return emsg(err)
	}
	var volumes []string
	err = h.createWorker(r, archive, mps, unprivileged, &volumes)
	if err != nil {
		for _, v := range volumes {
			h.freeDisk(v)
		}
		os.RemoveAll(h.ctDir(r.vmid))
		os.Remove(h.configPath(r.node, r.vmid))
		unlock()
		return emsg(err)
	}
	unlock()
	if o["start"] == "1" {
		return h.startCT(r.node, r.vmid, false)
	}
	return nil
}

func sortedMountKeys(mps map[string]mpValue) []string {
	c := &ctConf{keys: map[string]string{}}
	for k := range mps {
		c.keys[k] = ""
	}
	return c.mountKeys()
}

// templatePath checks the ostemplate as check_volume_access and
// abs_filesystem_path do and returns the file.
func (h *Host) templatePath(node, ostemplate string) (string, error) {
	notFound := fmt.Errorf("can't find file '%s'", ostemplate)
	if strings.HasPrefix(ostemplate, "/") {
		st, err := os.Stat(ostemplate)
		if err != nil || !st.Mode().IsRegular() {
			return "", notFound
		}
		return ostemplate, nil
	}
	v, err := h.volume(ostemplate)
	if err != nil {
		return "", err
	}
	if v.Type != "vztmpl" {
		return "", fmt.Errorf("unable to use volume %s - content type needs to be 'vztmpl'", ostemplate)
	}
	if err := v.Storage.checkEnabled(node); err != nil {
		return "", err
	}
	st, err := os.Stat(v.Path)
	if err != nil || !st.Mode().IsRegular() {
		return "", notFound
	}
	return v.Path, nil
}

// createWorker is the part of create_vm that runs in the task. It records
// every volume it allocates in *volumes so the caller can undo them.
func (h *Host) createWorker(r *createReq, archive string, mps map[string]mpValue, unprivileged bool, volumes *[]string) error {
	vmid := r.vmid
	conf := &ctConf{keys: map[string]string{}}
	rootdir := h.rootfsDir(vmid)

	// create_disks: allocate new volumes, keep existing ones and binds.
	for _, k := range sortedMountKeys(mps) {
		m := mps[k]
		switch mpType(m.Volume) {
		case "volume":
			if nv := newVolumeRE.FindStringSubmatch(m.Volume); nv != nil {
				s, err := h.storage(nv[1])
				if err != nil {
					return err
				}
				size, _ := strconv.ParseFloat(nv[2], 64)
				link := ""
				if k == "rootfs" {
					link = rootdir
				}
				volid, err := h.allocDisk(s, vmid, unprivileged, link)
				if err != nil {
					return err
				}
				*volumes = append(*volumes, volid)
				m.Volume = volid
				m.set("size", formatSize(size))
			} else {
				v, err := h.volume(m.Volume)
				if err != nil {
					return err
				}
				if _, err := os.Stat(v.Path); err != nil {
					return fmt.Errorf("volume '%s' does not exist", m.Volume)
				}
			}
		case "bind", "device":
			// mount_all mounts every mount point before extraction.
			if err := checkBindSource(m.Volume); err != nil {
				return err
			}
		}
		conf.keys[k] = m.String()
	}

	// restore_archive, into a fresh directory (a leftover of a CT that no
	// longer has a config is stale).
	os.RemoveAll(h.ctDir(vmid))
	if err := os.MkdirAll(h.ctDir(vmid), 0o755); err != nil {
		return err
	}
	os.Chmod(h.lxcPath(), 0o755)
	os.Chmod(h.ctDir(vmid), 0o755)
	if strings.HasSuffix(strings.ToLower(archive), ".tar") && isOCIArchive(archive) {
		return errors.New("the PVE stand-in does not simulate the native OCI archive import of PVE 9.1")
	}
	argv, err := pvetest.ExtractCommand(archive, rootdir, unprivileged)
	if err != nil {
		return err
	}
	out, err := pvetest.Extract(context.Background(), archive, rootdir, unprivileged)
	if err != nil {
		// tar's complaints, then run_command's verdict.
		r.warn.Write(out)
		return fmt.Errorf("command '%s' failed: %s", strings.Join(argv, " "), exitText(err))
	}
	// --totals: "Total bytes read: ...", as PVE's task log shows it.
	r.out.Write(out)

	// PVE::LXC::Setup->new: detect the distribution.
	root := newRootfs(rootdir, unprivileged)
	warn := func(s string) { fmt.Fprintln(r.warn, s) }
	ostype := r.opts["ostype"]
	if ostype != "unmanaged" {
		detected, err := root.detectOS(warn)
		if err != nil {
			return err
		}
		if ostype == "" {
			ostype = detected
		} else if detected != ostype {
			warn(fmt.Sprintf("got unexpected ostype (%s != %s)", detected, ostype))
		}
		if err := root.checkPlugin(ostype); err != nil {
			return err
		}
	}
	arch := r.opts["arch"]
	if arch == "" {
		var err error
		if arch, err = root.detectArch(); err != nil {
			arch = "amd64"
			fmt.Fprintf(r.out, "Architecture detection failed: %v\nFalling back to %s.\nUse `pct set VMID --arch ARCH` to change.\n", err, arch)
		}
	}

	// update_pct_config with the other parameters.
	for k, v := range r.opts {
		if notConfigKeys[k] || k == "rootfs" || isIndexed(k, "mp") {
			continue
		}
		if isIndexed(k, "net") {
			v = normalizeNet(v)
		}
		conf.keys[k] = v
	}
	conf.keys["ostype"] = ostype
	conf.keys["arch"] = arch
	if unprivileged {
		conf.keys["unprivileged"] = "1"
	}
	conf.setDescription(r.opts["description"])
	if env, ok := r.opts["env"]; ok {
		conf.setEnv(strings.Split(env, "\x00"))
	}
	if err := h.writeConfig(r.node, vmid, conf); err != nil { // save config (after OS detection)
		return err
	}
	if err := root.setupRootfs(conf, ostype, r.sshKeys, true); err != nil {
		return err
	}
	if ostype != "unmanaged" && r.password != "" {
		if err := root.setRootPassword(r.password); err != nil {
			return err
		}
	}
	// set some defaults
	if conf.keys["hostname"] == "" {
		conf.keys["hostname"] = fmt.Sprintf("CT%d", vmid)
	}
	if conf.keys["memory"] == "" || conf.keys["memory"] == "0" {
		conf.keys["memory"] = "512"
	}
	if _, ok := conf.keys["swap"]; !ok {
		conf.keys["swap"] = "512"
	}
	return h.writeConfig(r.node, vmid, conf)
}

// checkBindSource is what mountpoint_mount checks of a bind mount's host
// directory.
func checkBindSource(src string) error {
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		if strings.HasPrefix(src, "/dev/") && err == nil {
			return nil // device mount
		}
		return fmt.Errorf("directory '%s' does not exist", src)
	}
	clean := filepath.Clean(src)
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		return err
	}
	if real != clean {
		return fmt.Errorf("mount path modified by symlink: %s != %s", clean, real)
	}
	return nil
}

// isOCIArchive is PVE 9.1's test for a plain .tar template: an OCI image
// layout (oci-layout, index.json and blobs/, without "./" prefixes).
func isOCIArchive(archive string) bool {
	f, err := os.Open(archive)
	if err != nil {
		return false
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var layout, index, blobs bool
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		switch {
		case hdr.Name == "oci-layout":
			layout = true
		case hdr.Name == "index.json":
			index = true
		case strings.HasPrefix(hdr.Name, "blobs/"):
			blobs = true
		}
	}
	return layout && index && blobs
}

// exitText turns pvetest.Extract's error into run_command's wording.
func exitText(err error) string {
	if m := regexp.MustCompile(`exit status (\d+)`).FindStringSubmatch(err.Error()); m != nil {
		return "exit code " + m[1]
	}
	return err.Error()
}
