package pveoracle

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// apiValidateScript judges HTTP API requests with PVE's own schema; it
// ships inside the binaries that use it (the stand-in API server) so they
// need nothing of the repository at run time.
//
//go:embed api-validate.pl
var apiValidateScript []byte

// APIValidator is a running api-validate.pl: Proxmox's API method lookup
// (find_handler) and parameter check (PVE::JSONSchema::validate) for each
// request, in one long-lived Perl process (loading PVE's modules takes
// about a second).
type APIValidator struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Reader
	Version Version
}

// APIVerdict is what PVE's schema says of one request.
type APIVerdict struct {
	// Known is false when no method of the oracle's PVE::API2 classes
	// serves the path and verb (pve-manager's paths: /version,
	// /cluster/*, /nodes, tasks).
	Known bool `json:"known"`
	OK    bool `json:"ok"`
	// Handler is the API method's name (create_vm, upload, ...).
	Handler string `json:"handler"`
	// Message and Errors are PVE's exception: "Parameter verification
	// failed." and one message per bad parameter.
	Message string            `json:"message"`
	Errors  map[string]string `json:"errors"`
}

// StartAPIValidator starts api-validate.pl on the oracle in dir for PVE
// release v, with the script written into workDir. The process's stderr
// (Perl's warnings) goes to stderr. It checks that the oracle refuses a
// request PVE refuses, so that a broken oracle cannot pass everything.
func StartAPIValidator(dir string, v Version, workDir string, stderr io.Writer) (*APIValidator, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	script := filepath.Join(workDir, "api-validate.pl")
	if err := os.WriteFile(script, apiValidateScript, 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("perl", script, abs)
	cmd.Dir = abs
	cmd.Env = append(os.Environ(), "PVE_CONTAINER_SRC="+filepath.Join(abs, v.Src))
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start api-validate.pl: %w", err)
	}
	a := &APIValidator{cmd: cmd, in: in, out: bufio.NewReader(outPipe), Version: v}
	line, err := a.out.ReadBytes('\n')
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("api-validate.pl did not start (missing Perl modules? scripts/install-deps.sh installs them): %v", err)
	}
	var ready struct{ Ready int }
	if json.Unmarshal(line, &ready) != nil || ready.Ready != 1 {
		a.Close()
		return nil, fmt.Errorf("api-validate.pl: unexpected first line %q", line)
	}
	// The control: PVE refuses this hostname and this unknown key.
	ctl, err := a.Validate("POST", "/nodes/pve/lxc", map[string]any{
		"vmid": "100", "ostemplate": "local:vztmpl/x.tar.gz", "hostname": "-bad", "nosuchkey": "1",
	})
	if err != nil {
		a.Close()
		return nil, err
	}
	if !ctl.Known || ctl.OK || ctl.Errors["hostname"] == "" || ctl.Errors["nosuchkey"] == "" {
		a.Close()
		return nil, fmt.Errorf("the oracle accepted a create PVE refuses (%+v): it is not working", ctl)
	}
	return a, nil
}

// Validate has PVE judge one request: method, path under /api2/json
// (e.g. /nodes/pve/lxc/100/config) and the request's parameters (strings
// as a form carries them, or JSON values).
func (a *APIValidator) Validate(method, path string, params map[string]any) (APIVerdict, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if params == nil {
		params = map[string]any{}
	}
	req, err := json.Marshal(map[string]any{"method": method, "path": path, "params": params})
	if err != nil {
		return APIVerdict{}, err
	}
	if _, err := a.in.Write(append(req, '\n')); err != nil {
		return APIVerdict{}, fmt.Errorf("api-validate.pl: %w", err)
	}
	line, err := a.out.ReadBytes('\n')
	if err != nil {
		return APIVerdict{}, fmt.Errorf("api-validate.pl: %w", err)
	}
	var v struct {
		APIVerdict
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return APIVerdict{}, fmt.Errorf("api-validate.pl answered %q: %v", line, err)
	}
	if v.Error != "" {
		return APIVerdict{}, errors.New("api-validate.pl: " + v.Error)
	}
	return v.APIVerdict, nil
}

// Close ends the Perl process.
func (a *APIValidator) Close() error {
	a.in.Close()
	return a.cmd.Wait()
}
