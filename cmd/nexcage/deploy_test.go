package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestDeployScripts runs the deploy, create and list --containers scripts
// of testdata/script/deploy, each against its own PVE stand-in cluster:
// real template extraction and real LXC behind pct's interface.
func TestDeployScripts(t *testing.T) {
	testenv.RequireRoot(t)
	argvLogs := checkStandInArgvs(t)
	runStandInScripts(t, "deploy", func(e *testscript.Env, s *pvetest.StandIn) error {
		if argvLogs != "" {
			e.Setenv("NEXCAGE_PVE_ARGV_LOG", filepath.Join(argvLogs, filepath.Base(e.WorkDir)+".jsonl"))
		}
		return nil
	}, map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"exits":   cmdExits,
		"mkimage": cmdMkimage,
	})
}

// runStandInScripts runs the scripts of testdata/script/<dir>, each
// against its own PVE stand-in cluster (its commands first on PATH, its
// root in NEXCAGE_PVE_ROOT and PVE_ROOT), with a registry in REGISTRY and
// a store and home of the script's own; setup adds what the scripts of
// dir need.
func runStandInScripts(t *testing.T, dir string, setup func(e *testscript.Env, s *pvetest.StandIn) error, cmds map[string]func(ts *testscript.TestScript, neg bool, args []string)) {
	registry := testenv.Registry(t)
	var mu sync.Mutex // NewStandIn and setup register cleanups on t from parallel scripts
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("..", "..", "testdata", "script", dir),
		// testscript removes its own work root only after every script has
		// run, which a -run filter prevents: t.TempDir always goes.
		WorkdirRoot:         t.TempDir(),
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			mu.Lock()
			defer mu.Unlock()
			s := pvetest.NewStandIn(t)
			e.Setenv("PATH", s.BinDir+string(filepath.ListSeparator)+e.Getenv("PATH"))
			e.Setenv("NEXCAGE_PVE_ROOT", s.Root)
			e.Setenv("PVE_ROOT", s.Root)
			e.Setenv("NEXCAGE_STORE", filepath.Join(e.WorkDir, "store"))
			e.Setenv("HOME", e.WorkDir)
			e.Setenv("REGISTRY", registry)
			return setup(e, s)
		},
		Cmds: cmds,
	})
}

// checkStandInArgvs has PVE's own CLI judge, once every script has run,
// each pct/pvesh create, set and start argv the scripts ran through the
// stand-in, for the PVE version it played: one the stand-in accepted must
// pass PVE's, and one it refused as a parameter error ("400 ...") must be
// refused by PVE's too. It returns the folder the stand-in logs argvs to,
// or "" without the oracle (the check then does not run, and says why).
func checkStandInArgvs(t *testing.T) string {
	if os.Getenv(pveoracle.Env) == "" {
		t.Logf("%s is not set: the argvs the deploy scripts run are not checked against PVE's own CLI", pveoracle.Env)
		return ""
	}
	o := pveoracle.Require(t)
	dir := t.TempDir()
	t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
		checked := 0
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Error(err)
				continue
			}
			for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
				var rec struct {
					PVE   string   `json:"pve"`
					Argv  []string `json:"argv"`
					OK    bool     `json:"ok"`
					Error string   `json:"error"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Errorf("%s: %v", f, err)
					continue
				}
				v, known := pveoracle.ByPVE(rec.PVE)
				if !known || (!rec.OK && !strings.HasPrefix(rec.Error, "400 ")) {
					continue // no oracle for that PVE, or not a parameter error
				}
				rejected, out := o.RejectsArgv(t, v, rec.Argv...)
				checked++
				switch {
				case rec.OK && rejected:
					t.Errorf("%s: the stand-in (PVE %s) accepted %q, PVE's own CLI refuses it:\n%s", filepath.Base(f), rec.PVE, rec.Argv, out)
				case !rec.OK && !rejected:
					t.Errorf("%s: the stand-in (PVE %s) refused %q (%s), PVE's own CLI accepts it", filepath.Base(f), rec.PVE, rec.Argv, rec.Error)
				}
			}
		}
		if checked == 0 {
			t.Error("no pct/pvesh argv of the deploy scripts was checked against PVE's CLI: is the stand-in logging?")
		}
		t.Logf("PVE's own CLI judged %d argvs of the deploy scripts as the stand-in did", checked)
	})
	return dir
}
