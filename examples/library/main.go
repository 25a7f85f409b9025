// Command nexcage-user builds a Proxmox VE LXC template from an OCI image
// with nexcage as a Go library, reporting progress its own way: it counts
// the steps and bytes the pipeline reports and prints a summary.
//
//	nexcage-user IMAGE STORE-DIR OUTPUT-DIR
//	nexcage-user oci:./layout:latest ./store ./templates/
//
// It is a module of its own (go build in this directory), so it can only
// use nexcage's public API; nexcage's tests build and run it
// (cmd/nexcage TestLibraryModule).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("nexcage-user: ")
	if len(os.Args) != 4 {
		log.Fatal("usage: nexcage-user IMAGE STORE-DIR OUTPUT-DIR")
	}
	if err := build(context.Background(), os.Args[1], os.Args[2], os.Args[3]); err != nil {
		log.Fatal(err)
	}
}

func build(ctx context.Context, image, storeDir, outDir string) error {
	store, err := rootfs.StoreAt(storeDir)
	if err != nil {
		return err
	}
	rep := &tally{}
	// Pull the image into the store (unless it is there), compute its
	// rootfs in memory while the layers arrive, and write the template and
	// its sidecars: what `nexcage build` does.
	res, err := pipeline.Build(ctx, store, image, pipeline.BuildOptions{
		Convert:  convert.Options{Output: filepath.Clean(outDir) + "/"},
		Progress: rep,
	})
	if err != nil {
		return err
	}
	fmt.Printf("template %s\nsidecars %s %s\n", res.Result.Template, res.Result.Config, res.Result.SidecarJSON)
	fmt.Printf("steps %d, items %d, bytes %d, warnings %d\n", rep.steps.Load(), rep.items.Load(), rep.bytes.Load(), rep.warnings.Load())
	return nil
}

// tally is a progress.Reporter of this program's own: it prints each step
// and counts steps, items and bytes. Layers download in parallel, so it
// counts atomically.
type tally struct {
	steps, items, bytes, warnings atomic.Int64
}

func (t *tally) Step(format string, args ...any) {
	t.steps.Add(1)
	fmt.Printf("step: "+format+"\n", args...)
}

func (t *tally) Warn(format string, args ...any) {
	t.warnings.Add(1)
	fmt.Fprintf(os.Stderr, "warning: "+format+"\n", args...)
}

func (t *tally) Bytes(label string, total int64) progress.Counter {
	t.items.Add(1)
	return counter{t}
}

var _ progress.Reporter = (*tally)(nil)

type counter struct{ t *tally }

func (c counter) Add(n int)        { c.t.bytes.Add(int64(n)) }
func (c counter) Done(note string) {}
