package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

func TestMain(m *testing.M) {
	testscript.Main(leakChecked{m}, map[string]func(){
		"nexcage": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// leakChecked runs the tests through testenv.RunMain (a private TMPDIR
// that must end empty, no goroutine left) inside testscript's own TestMain.
type leakChecked struct{ m *testing.M }

func (l leakChecked) Run() int { return testenv.RunMain(l.m) }

// TestScripts runs the CLI scripts of testdata/script against the real
// binary, a real docker-registry process and skopeo.
func TestScripts(t *testing.T) {
	registry := testenv.Registry(t)
	skopeo := testenv.RequireTool(t, "skopeo")
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("..", "..", "testdata", "script"),
		// testscript removes its own work root only after every script has
		// run, which a -run filter prevents: t.TempDir always goes.
		WorkdirRoot:         t.TempDir(),
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("REGISTRY", registry)
			e.Setenv("NEXCAGE_STORE", filepath.Join(e.WorkDir, "store"))
			e.Setenv("HOME", e.WorkDir)
			e.Setenv("SKOPEO", skopeo)
			factory, _ := filepath.Abs(filepath.Join("..", "..", "examples", "factory"))
			e.Setenv("FACTORY", factory)
			if os.Geteuid() == 0 {
				e.Setenv("ROOT", "1")
			}
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Geteuid() == 0, nil
			}
			return false, errors.New("unknown condition " + cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":    cmdExits,
			"mkimage":  cmdMkimage,
			"mkdocker": cmdMkdocker,
		},
	})
}

// exits N CMD ARGS...: CMD must exit with status N exactly (testscript's
// `!` only knows "non-zero", and scripts rely on 1 versus 2).
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", strings.Join(args[1:], " "), got, want)
	}
}

var (
	corpusOnce sync.Once
	corpus     map[string]testimage.Case
	corpusErr  error
)

func corpusCase(ts *testscript.TestScript, name string) testimage.Case {
	corpusOnce.Do(func() {
		cases, err := testimage.Corpus()
		corpus, corpusErr = map[string]testimage.Case{}, err
		for _, c := range cases {
			corpus[c.Name] = c
		}
		hostile, err := testimage.Hostile()
		if corpusErr == nil {
			corpusErr = err
		}
		for n, img := range hostile {
			corpus["hostile-"+n] = testimage.Case{Name: "hostile-" + n, Image: img}
		}
		for _, arch := range []string{"amd64", "arm64"} {
			img, err := testimage.Alpine(arch)
			if corpusErr == nil {
				corpusErr = err
			}
			corpus["alpine-"+arch] = testimage.Case{Name: "alpine-" + arch, Image: img}
		}
	})
	if corpusErr != nil {
		ts.Fatalf("corpus: %v", corpusErr)
	}
	c, ok := corpus[name]
	if !ok {
		ts.Fatalf("no corpus case %q", name)
	}
	return c
}

// mkimage CASE DIR TAG: write a corpus case into the OCI layout DIR as TAG.
func cmdMkimage(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: mkimage CASE DIR TAG")
	}
	c := corpusCase(ts, args[0])
	dir := ts.MkAbs(args[1])
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			ts.Fatalf("mkimage: %v", err)
		}
	}
	ann := layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": args[2]})
	if c.Index != nil {
		err = p.AppendIndex(c.Index, ann)
	} else {
		err = p.AppendImage(c.Image, ann)
	}
	ts.Check(err)
}

// mkdocker CASE FILE REPO:TAG: write a corpus case as a `docker save` archive.
func cmdMkdocker(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: mkdocker CASE FILE REPO:TAG")
	}
	c := corpusCase(ts, args[0])
	tag, err := name.NewTag(args[2])
	ts.Check(err)
	var img v1.Image = c.Image
	ts.Check(tarball.WriteToFile(ts.MkAbs(args[1]), tag, img))
}
