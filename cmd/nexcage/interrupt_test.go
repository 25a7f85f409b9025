package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/testenv"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// nexcageBinary builds the command once per test run, for tests that must
// run it as a real process (signals, other users).
func nexcageBinary(t *testing.T) string {
	t.Helper()
	goTool := testenv.RequireTool(t, "go")
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nexcage-bin-")
		if err != nil {
			binErr = err
			return
		}
		testenv.AtExit(func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "nexcage")
		out, err := exec.Command(goTool, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// bigLayout writes an image whose single uncompressed layer holds n MiB of
// incompressible data, big enough that a build is still running when a
// test interrupts it.
func bigLayout(t *testing.T, dir string, mib int) string {
	t.Helper()
	tarPath := filepath.Join(t.TempDir(), "layer.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	rng := rand.NewChaCha8([32]byte{1})
	chunk := make([]byte, 1<<20)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: time.Unix(1700000000, 0)})
	for i := 0; i < mib; i++ {
		rng.Read(chunk)
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join("data", strings.Repeat("f", 1+i%7)+string(rune('a'+i%26))+time.Unix(int64(i), 0).UTC().Format("150405")), Mode: 0o644, Size: int64(len(chunk)), ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(chunk)
	}
	tw.Close()
	f.Close()
	l, err := tarball.LayerFromFile(tarPath, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/data/fa000000"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "big"}), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":big"
}

// TestInterruptedBuildLeavesNothing: SIGINT or SIGTERM during a build
// stops it promptly with 130 or 143, removes its temporary files and
// leaves an existing template untouched.
func TestInterruptedBuildLeavesNothing(t *testing.T) {
	bin := nexcageBinary(t)
	work := t.TempDir()
	big := bigLayout(t, filepath.Join(work, "layout"), 300)
	out := filepath.Join(work, "out")
	os.Mkdir(out, 0o755)
	target := filepath.Join(out, "app.tar.zst")
	good := []byte("a good template from an earlier build")
	os.WriteFile(target, good, 0o644)
	tmp := filepath.Join(work, "tmp")
	os.Mkdir(tmp, 0o755)

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(bin, "build", "--name", "app", "--store", filepath.Join(work, "store"), big, "-o", target)
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			var stderr lockedBuffer // read while the process writes it
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Interrupt once the layer is being read, not before the
			// signal handler exists.
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(stderr.String(), "pulling") && !strings.Contains(stderr.String(), "flattening") && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			sent := time.Now()
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 128+int(sig) {
				t.Fatalf("exit: %v, want status %d\n%s", err, 128+int(sig), stderr.String())
			}
			if took := time.Since(sent); took > 5*time.Second {
				t.Errorf("took %s to stop after the signal", took)
			}
			if !strings.Contains(stderr.String(), "interrupted") {
				t.Errorf("stderr does not say it was interrupted:\n%s", stderr.String())
			}
			if b, _ := os.ReadFile(target); !bytes.Equal(b, good) {
				t.Error("the existing template was changed")
			}
			for _, d := range []string{out, tmp} {
				entries, _ := os.ReadDir(d)
				for _, e := range entries {
					if e.Name() != "app.tar.zst" || atomicfile.IsTemp(e.Name()) {
						t.Errorf("left behind: %s", filepath.Join(d, e.Name()))
					}
				}
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
