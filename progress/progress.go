// Package progress reports what a long command is doing: redrawn bars on a
// terminal, one plain line per step otherwise (logs and CI stay readable),
// only warnings with -q. A Recorder keeps every warning as data, so a
// command can put them in its result.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Reporter receives a command's progress. Implementations are safe for
// concurrent use: layers download in parallel.
type Reporter interface {
	// Step announces a stage ("pulling docker://alpine:3.20").
	Step(format string, args ...any)
	// Warn says something the user should know but that is not an error.
	Warn(format string, args ...any)
	// Bytes starts a byte counter for one item (a layer); total may be 0
	// when unknown.
	Bytes(label string, total int64) Counter
}

// Counter tracks one item's bytes.
type Counter interface {
	Add(n int)
	// Done ends the item with a short note ("done", "already stored").
	Done(note string)
}

// New picks the reporter for w: only warnings when quiet (quiet hides
// progress, never what the user should know), bars on a terminal, plain
// lines elsewhere.
func New(w *os.File, quiet bool) Reporter {
	switch {
	case quiet:
		return warnOnly{&lines{w: w}}
	case IsTerminal(w):
		return newBars(w)
	default:
		return &lines{w: w}
	}
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Discard reports nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Step(string, ...any)         {}
func (discard) Warn(string, ...any)         {}
func (discard) Bytes(string, int64) Counter { return nopCounter{} }

type nopCounter struct{}

func (nopCounter) Add(int)     {}
func (nopCounter) Done(string) {}

// warnOnly passes on warnings and nothing else.
type warnOnly struct{ r Reporter }

func (warnOnly) Step(string, ...any)               {}
func (w warnOnly) Warn(format string, args ...any) { w.r.Warn(format, args...) }
func (warnOnly) Bytes(string, int64) Counter       { return nopCounter{} }

// WarnPrefix is r with prefix before each warning: several builds share
// one stderr and one warnings array, and each warning must name its image.
func WarnPrefix(r Reporter, prefix string) Reporter { return warnPrefix{r, prefix} }

type warnPrefix struct {
	Reporter
	prefix string
}

func (w warnPrefix) Warn(format string, args ...any) {
	w.Reporter.Warn("%s%s", w.prefix, fmt.Sprintf(format, args...))
}

// Recorder passes everything on to its Reporter and keeps each warning, in
// the order given, for a result object (--json) that must carry them.
type Recorder struct {
	Reporter
	mu   sync.Mutex
	list []string
}

// Record wraps r in a Recorder.
func Record(r Reporter) *Recorder { return &Recorder{Reporter: r} }

// Warn keeps the warning and passes it on.
func (r *Recorder) Warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.list = append(r.list, msg)
	r.mu.Unlock()
	r.Reporter.Warn("%s", msg)
}

// Warnings returns the warnings so far, never nil (an empty JSON array
// says "none" more plainly than a missing key).
func (r *Recorder) Warnings() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{}, r.list...)
}

// lines writes one line per step and per finished item.
type lines struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lines) Step(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}

func (l *lines) Warn(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "warning: "+format+"\n", args...)
}

func (l *lines) Bytes(label string, total int64) Counter {
	return &lineCounter{l: l, label: label, start: time.Now()}
}

type lineCounter struct {
	l     *lines
	label string
	start time.Time
	n     int64
	mu    sync.Mutex
}

func (c *lineCounter) Add(n int) { c.mu.Lock(); c.n += int64(n); c.mu.Unlock() }

func (c *lineCounter) Done(note string) {
	c.mu.Lock()
	n := c.n
	c.mu.Unlock()
	if n == 0 {
		c.l.Step("  %s: %s", c.label, note)
		return
	}
	c.l.Step("  %s: %s, %s at %s", c.label, note, HumanBytes(n), rate(n, time.Since(c.start)))
}

// HumanBytes renders a byte count the way people read it.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		d = time.Millisecond
	}
	return HumanBytes(int64(float64(n)/d.Seconds())) + "/s"
}

// bars redraws one line per active item below the step lines.
type bars struct {
	mu     sync.Mutex
	w      io.Writer
	items  []*bar
	drawn  int // lines drawn last time, to move the cursor back over them
	ticker *time.Ticker
	stop   chan struct{}
	once   sync.Once
}

type bar struct {
	label    string
	total, n int64
	start    time.Time
	note     string
}

func newBars(w io.Writer) *bars {
	return &bars{w: w}
}

func (b *bars) Step(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clear()
	fmt.Fprintf(b.w, format+"\n", args...)
	b.draw()
}

func (b *bars) Warn(format string, args ...any) { b.Step("warning: "+format, args...) }

func (b *bars) Bytes(label string, total int64) Counter {
	b.mu.Lock()
	defer b.mu.Unlock()
	it := &bar{label: label, total: total, start: time.Now()}
	b.items = append(b.items, it)
	b.once.Do(func() {
		b.ticker = time.NewTicker(100 * time.Millisecond)
		b.stop = make(chan struct{})
		go b.loop(b.ticker, b.stop)
	})
	return &barCounter{b: b, it: it}
}

// loop takes its channels as arguments: draw resets the fields when the last
// bar ends, and a loop reading them then would wait forever.
func (b *bars) loop(ticker *time.Ticker, stop chan struct{}) {
	for {
		select {
		case <-ticker.C:
			b.mu.Lock()
			b.clear()
			b.draw()
			b.mu.Unlock()
		case <-stop:
			return
		}
	}
}

// clear moves the cursor up over the bars drawn last and erases them.
func (b *bars) clear() {
	if b.drawn > 0 {
		fmt.Fprintf(b.w, "\x1b[%dA\x1b[J", b.drawn)
		b.drawn = 0
	}
}

func (b *bars) draw() {
	var sb strings.Builder
	active := b.items[:0]
	for _, it := range b.items {
		if it.note != "" {
			// Finished items are printed once and scroll away with the steps.
			fmt.Fprintf(b.w, "  %s: %s, %s at %s\n", it.label, it.note, HumanBytes(it.n), rate(it.n, time.Since(it.start)))
			continue
		}
		active = append(active, it)
	}
	b.items = active
	for _, it := range b.items {
		fmt.Fprintf(&sb, "  %s %s\n", it.label, barLine(it))
	}
	b.drawn = len(b.items)
	io.WriteString(b.w, sb.String())
	if len(b.items) == 0 && b.stop != nil {
		close(b.stop)
		b.ticker.Stop()
		b.stop = nil
		b.once = sync.Once{}
	}
}

func barLine(it *bar) string {
	el := time.Since(it.start)
	if it.total <= 0 {
		return fmt.Sprintf("%s  %s", HumanBytes(it.n), rate(it.n, el))
	}
	const width = 30
	filled := int(float64(width) * float64(it.n) / float64(it.total))
	if filled > width {
		filled = width
	}
	return fmt.Sprintf("[%s%s] %s / %s  %s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		HumanBytes(it.n), HumanBytes(it.total), rate(it.n, el))
}

type barCounter struct {
	b  *bars
	it *bar
}

func (c *barCounter) Add(n int) {
	c.b.mu.Lock()
	c.it.n += int64(n)
	c.b.mu.Unlock()
}

func (c *barCounter) Done(note string) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.it.note = note
	c.b.clear()
	c.b.draw()
}
