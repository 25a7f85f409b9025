package main

// pvesm: PVE::CLI::pvesm, the storage manager (path, status, list).

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

func pvesmMain(h *Host, args []string) error {
	cmd, args, err := splitCommand("pvesm", args)
	if err != nil {
		return err
	}
	switch cmd {
	case "path":
		return pvesmPath(h, args)
	case "status":
		return pvesmStatus(h, args)
	case "list":
		return pvesmList(h, args)
	default:
		return fmt.Errorf("unknown command 'pvesm %s'", cmd)
	}
}

// pvesmPath prints the file behind a volume.
func pvesmPath(h *Host, args []string) error {
	const usage = "pvesm path <volume>"
	errs := newParamError(usage)
	a, err := parseCLI(args, &schema{}, h.Version, errs)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, usage)
	}
	if err := errs.orNil(); err != nil {
		return err
	}
	if len(a.pos) < 1 {
		return cliError("not enough arguments", usage)
	}
	if len(a.pos) > 1 {
		return cliError("too many arguments", usage)
	}
	v, err := h.volume(a.pos[0])
	if err != nil {
		return err
	}
	fmt.Println(v.Path)
	return nil
}

// pvesmStatus prints the storage table of PVE::CLI::pvesm's status:
// every storage this node may use, sizes in KiB.
func pvesmStatus(h *Host, args []string) error {
	const usage = "pvesm status [OPTIONS]"
	errs := newParamError(usage)
	a, err := parseCLI(args, &schema{fixed: map[string]*param{
		"storage": {typ: tString, format: storageID}, "content": str, "enabled": boolean, "format": boolean, "target": str,
	}}, h.Version, errs)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, usage)
	}
	if err := errs.orNil(); err != nil {
		return err
	}
	if len(a.pos) > 0 {
		return cliError("too many arguments", usage)
	}
	all, err := h.storages()
	if err != nil {
		return err
	}
	var rows []*Storage
	for _, s := range all {
		if id := a.opts["storage"]; id != "" && s.ID != id {
			continue
		}
		if !s.availableOn(h.Node) {
			if a.opts["storage"] != "" {
				return fmt.Errorf("storage '%s' is not available on node '%s'", s.ID, h.Node)
			}
			continue
		}
		if c := a.opts["content"]; c != "" && !anyContent(s, splitList(c)) {
			continue
		}
		if a.opts["enabled"] == "1" && s.Disabled {
			continue
		}
		rows = append(rows, s)
	}
	if id := a.opts["storage"]; id != "" && len(rows) == 0 {
		if _, err := h.storage(id); err != nil {
			return err
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	width := 0
	for _, s := range rows {
		width = max(width, len(s.ID))
	}
	width++
	fmt.Printf("%-*s %10s %10s %15s %15s %15s %8s\n", width, "Name", "Type", "Status", "Total", "Used", "Available", "%")
	for _, s := range rows {
		if s.Disabled {
			fmt.Printf("%-*s %10s %10s %15d %15d %15d % 8s\n", width, s.ID, s.Type, "disabled", 0, 0, 0, "N/A")
			continue
		}
		total, used, avail := h.usage(s)
		per := 0.0
		if total > 0 {
			per = float64(used) * 100 / float64(total)
		}
		fmt.Printf("%-*s %10s %10s %15d %15d %15d % 7.2f%%\n", width, s.ID, s.Type, "active", total/1024, used/1024, avail/1024, per)
	}
	return nil
}

func anyContent(s *Storage, want []string) bool {
	for _, c := range want {
		if s.hasContent(c) {
			return true
		}
	}
	return false
}

// usage is the file system usage behind a storage, in bytes.
func (h *Host) usage(s *Storage) (total, used, avail uint64) {
	dir := s.Path
	if !s.fileBased() {
		dir = h.simDir(s.ID)
	}
	var st syscall.Statfs_t
	for dir != "/" && dir != "." {
		if err := syscall.Statfs(dir, &st); err == nil {
			total = st.Blocks * uint64(st.Bsize)
			avail = st.Bavail * uint64(st.Bsize)
			used = total - st.Bfree*uint64(st.Bsize)
			return
		}
		dir = filepath.Dir(dir)
	}
	return 0, 0, 0
}

// volumeInfo is a row of `pvesm list`.
type volumeInfo struct {
	volid, format, content string
	size                   int64
	vmid                   int
}

// pvesmList prints a storage's volumes like PVE::CLI::pvesm's list.
func pvesmList(h *Host, args []string) error {
	const usage = "pvesm list <storage> [OPTIONS]"
	errs := newParamError(usage)
	a, err := parseCLI(args, &schema{fixed: map[string]*param{
		"content": str, "vmid": vmidParam,
	}}, h.Version, errs)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, usage)
	}
	if len(a.pos) < 1 {
		return cliError("not enough arguments", usage)
	}
	if len(a.pos) > 1 {
		return cliError("too many arguments", usage)
	}
	check(errs, "storage", a.pos[0], &param{typ: tString, format: storageID}, h.Version)
	if err := errs.orNil(); err != nil {
		return err
	}
	s, err := h.storage(a.pos[0])
	if err != nil {
		return err
	}
	if err := s.checkEnabled(h.Node); err != nil {
		return err
	}
	vols := h.listVolumes(s)
	want := splitList(a.opts["content"])
	var rows []volumeInfo
	for _, v := range vols {
		if len(want) > 0 && !slices.Contains(want, v.content) {
			continue
		}
		if id := a.opts["vmid"]; id != "" && fmt.Sprint(v.vmid) != id {
			continue
		}
		rows = append(rows, v)
	}
	width := 0
	for _, v := range rows {
		width = max(width, len(v.volid))
	}
	fmt.Printf("%-*s %-7s %-9s %10s %s\n", width, "Volid", "Format", "Type", "Size", "VMID")
	for _, v := range rows {
		if v.vmid != 0 {
			fmt.Printf("%-*s %-7s %-9s %10d %d\n", width, v.volid, v.format, v.content, v.size, v.vmid)
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].format < rows[j].format })
	for _, v := range rows {
		if v.vmid == 0 {
			fmt.Printf("%-*s %-7s %-9s %10d\n", width, v.volid, v.format, v.content, v.size)
		}
	}
	return nil
}

// templateFormats name a template's compression as pvesm list does.
var templateFormats = []struct{ ext, format string }{
	{".tar.gz", "tgz"}, {".tar.xz", "txz"}, {".tar.zst", "tzst"}, {".tar.bz2", "tbz2"}, {".tar", "tar"},
}

// listVolumes lists templates, ISOs and disks of a storage, by volid.
func (h *Host) listVolumes(s *Storage) []volumeInfo {
	var out []volumeInfo
	if s.fileBased() {
		if s.hasContent("vztmpl") {
			ents, _ := os.ReadDir(filepath.Join(s.Path, "template/cache"))
			for _, e := range ents {
				v, err := h.parseVolname(s, "vztmpl/"+e.Name())
				if err != nil || !e.Type().IsRegular() {
					continue
				}
				format := "tgz"
				for _, tf := range templateFormats {
					if strings.HasSuffix(strings.ToLower(e.Name()), tf.ext) {
						format = tf.format
						break
					}
				}
				info, _ := e.Info()
				out = append(out, volumeInfo{volid: s.ID + ":" + v.Name, format: format, content: "vztmpl", size: info.Size()})
			}
		}
		if s.hasContent("iso") {
			ents, _ := os.ReadDir(filepath.Join(s.Path, "template/iso"))
			for _, e := range ents {
				if _, err := h.parseVolname(s, "iso/"+e.Name()); err != nil || !e.Type().IsRegular() {
					continue
				}
				info, _ := e.Info()
				out = append(out, volumeInfo{volid: s.ID + ":iso/" + e.Name(), format: "iso", content: "iso", size: info.Size()})
			}
		}
	}
	ents, _ := os.ReadDir(h.simDir(s.ID))
	for _, e := range ents {
		v, err := h.parseVolname(s, e.Name())
		if err != nil {
			continue
		}
		out = append(out, volumeInfo{volid: s.ID + ":" + e.Name(), format: "raw", content: "rootdir", vmid: v.VMID})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].volid < out[j].volid })
	return out
}
