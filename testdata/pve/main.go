// Command pve is a stand-in for the Proxmox VE command line tools nexcage
// drives: pct, pvesm, pvesh and pveversion. One binary serves all four; it
// picks its personality from the name it was started as (symlinks, as the
// tests in internal/pvetest set up).
//
// Proxmox cannot run in a test machine, so the stand-in keeps a PVE host's
// state as plain files under $NEXCAGE_PVE_ROOT (storage.cfg, per-node CT
// configs, config locks) and does the container work with the real tools
// underneath: PVE's own tar command for extraction and LXC for running
// containers (see internal/pvetest). Messages and exit statuses are PVE's,
// as documented in docs/proxmox.md, because nexcage maps them to its
// own errors.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// exitDie is the exit status of a PVE CLI tool that dies: Perl's die in the
// CLI handler ends in exit(-1).
const exitDie = 255

func main() {
	name := filepath.Base(os.Args[0])
	var run func(h *Host, args []string) error
	needRoot := true
	switch name {
	case "pct":
		run = pctMain
	case "pvesm":
		run = pvesmMain
	case "pvesh":
		run = pveshMain
	case "pve-api":
		// The node's HTTP API (pveproxy), over the same state.
		run = apiMain
	case "pveversion":
		// pveversion only reads package versions; PVE lets anyone run it.
		run = pveversionMain
		needRoot = false
	default:
		fmt.Fprintf(os.Stderr, "%s: run me as pct, pvesm, pvesh, pveversion or pve-api (a symlink to this binary)\n", name)
		os.Exit(2)
	}
	// PVE's CLI handlers refuse non-root callers before anything else.
	if needRoot && os.Geteuid() != 0 {
		die("please run as root")
	}
	h, err := newHost()
	if err != nil {
		die(err.Error())
	}
	err = run(h, os.Args[1:])
	logArgv(h, name, err)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		die(err.Error())
	}
}

// logArgv records a pct or pvesh call that changes a container, and
// whether the stand-in accepted it, in $NEXCAGE_PVE_ARGV_LOG (one JSON
// object a line): the tests have PVE's own CLI judge the same argv, for
// the PVE version the stand-in played (cmd/nexcage TestDeployScripts).
func logArgv(h *Host, name string, err error) {
	file := os.Getenv("NEXCAGE_PVE_ARGV_LOG")
	args := os.Args[1:]
	if file == "" || len(args) == 0 || (name != "pct" && name != "pvesh") {
		return
	}
	switch args[0] {
	case "create", "set", "start", "mount", "unmount":
	default:
		return
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	line, _ := json.Marshal(map[string]any{
		"pve": fmt.Sprintf("%d.%d", h.Version.major, h.Version.minor), "argv": append([]string{name}, args...),
		"ok": err == nil, "error": msg,
	})
	f, ferr := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if ferr != nil {
		return
	}
	defer f.Close()
	f.Write(append(line, '\n'))
}

// die prints a message the way Perl's die does in PVE's CLI (one line,
// newline-terminated, on stderr) and exits 255.
func die(msg string) {
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	os.Stderr.WriteString(msg)
	os.Exit(exitDie)
}

// exitError ends the program with a status and nothing more to print
// (whatever had to be said was already written).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// pveversionMain prints pve-manager's version line; PVE_VERSION picks the
// version so tests can pretend to be an older or newer PVE.
func pveversionMain(h *Host, args []string) error {
	verbose := false
	for _, a := range args {
		switch a {
		case "-v", "--verbose":
			verbose = true
		default:
			return fmt.Errorf("400 unable to parse option\npveversion [OPTIONS]")
		}
	}
	v := h.Version
	if !verbose {
		fmt.Printf("pve-manager/%s/5d7f8ddc (running kernel: %s)\n", v.raw, kernelVersion)
		return nil
	}
	// `pveversion -v` lists packages; its first line is proxmox-ve, as on
	// a real host.
	fmt.Printf("proxmox-ve: %d.%d.0 (running kernel: %s)\n", v.major, v.minor, kernelVersion)
	fmt.Printf("pve-manager: %s (running version: %s/5d7f8ddc)\n", v.raw, v.raw)
	fmt.Printf("pve-container: %s\n", v.containerVersion())
	fmt.Printf("lxc-pve: 6.0.0-1\n")
	return nil
}

const kernelVersion = "6.8.12-4-pve"
