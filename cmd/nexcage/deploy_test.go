package main

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestDeployScripts runs the deploy, create and list --containers scripts
// of testdata/script/deploy, each against its own PVE stand-in cluster:
// real template extraction and real LXC behind pct's interface.
func TestDeployScripts(t *testing.T) {
	testenv.RequireRoot(t)
	registry := testenv.Registry(t)
	var mu sync.Mutex // NewStandIn registers cleanups on t from parallel scripts
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("..", "..", "testdata", "script", "deploy"),
		// testscript removes its own work root only after every script has
		// run, which a -run filter prevents: t.TempDir always goes.
		WorkdirRoot:         t.TempDir(),
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			mu.Lock()
			s := pvetest.NewStandIn(t)
			mu.Unlock()
			e.Setenv("PATH", s.BinDir+string(filepath.ListSeparator)+e.Getenv("PATH"))
			e.Setenv("NEXCAGE_PVE_ROOT", s.Root)
			e.Setenv("PVE_ROOT", s.Root)
			e.Setenv("NEXCAGE_STORE", filepath.Join(e.WorkDir, "store"))
			e.Setenv("HOME", e.WorkDir)
			e.Setenv("REGISTRY", registry)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":   cmdExits,
			"mkimage": cmdMkimage,
		},
	})
}
