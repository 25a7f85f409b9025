package progress_test

import (
	"fmt"
	"sync/atomic"

	"github.com/nexcage/nexcage/progress"
)

// tally is a Reporter of a program's own: it counts what the pipeline
// reports instead of drawing it.
type tally struct{ steps, bytes atomic.Int64 }

func (t *tally) Step(format string, args ...any) { t.steps.Add(1) }
func (t *tally) Warn(format string, args ...any) { fmt.Printf("warning: "+format+"\n", args...) }
func (t *tally) Bytes(label string, total int64) progress.Counter {
	return counter{t}
}

type counter struct{ t *tally }

func (c counter) Add(n int)        { c.t.bytes.Add(int64(n)) }
func (c counter) Done(note string) {}

// Any program can implement Reporter and pass it in a stage's options
// (rootfs.PullOptions, convert.Options, ...); a Recorder keeps the
// warnings for a result.
func ExampleReporter() {
	t := &tally{}
	rep := progress.Record(t)
	rep.Step("pulling %s", "docker://alpine:3.20")
	c := rep.Bytes("layer 1/1", 3<<20)
	c.Add(1 << 20)
	c.Add(2 << 20)
	c.Done("done")
	rep.Warn("dropped %d device node(s) outside /dev", 2)
	fmt.Println(t.steps.Load(), "step,", t.bytes.Load(), "bytes, warnings:", rep.Warnings())
	// Output:
	// warning: dropped 2 device node(s) outside /dev
	// 1 step, 3145728 bytes, warnings: [dropped 2 device node(s) outside /dev]
}
