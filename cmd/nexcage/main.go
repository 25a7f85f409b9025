// Command nexcage turns OCI container images into Proxmox VE LXC templates.
// This package only parses flags, prints results and maps errors to exit
// statuses; every stage lives in its own package.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/progress"
)

// Exit statuses scripts rely on.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one `nexcage NAME` subcommand.
type command struct {
	name    string
	args    string // usage after the flags, e.g. "IMAGE BUNDLE"
	summary string
	// help is the long description shown by --help.
	help  string
	flags func(fs *pflag.FlagSet, o *opts)
	run   func(ctx context.Context, e *env, args []string) (any, error)
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// opts are the values of every flag; each command registers the ones it uses.
type opts struct {
	json, quiet  bool
	store        string
	platform     string
	insecure     bool
	timeout      string
	force        bool
	repair       bool // check --repair
	pull         string
	verbose      bool
	conv         convertFlags
	jobs         int
	staged       bool
	deploy       deployFlags
	deployAfter  bool
	maxLayerSize string
	maxEntries   int64
	createName   string
	createImage  string
	containers   bool
	olderThan    string // prune
	dryRun       bool   // prune
	upgrade      upgradeFlags
}

// env is what a command runs with.
type env struct {
	opts
	stdout, stderr io.Writer
	// progress is the Recorder below, so every warning a library reports
	// reaches the user: stderr in text mode (also with -q), the result's
	// "warnings" array with --json.
	progress progress.Reporter
	warnings *progress.Recorder
	cmd      *command
	// flags is the parsed command line, for rules between flags.
	flags *pflag.FlagSet
	// deployOpts are the deploy flags once checked (checkDeployFlags), so
	// a --password-file - is read once.
	deployOpts *pct.Options
}

// usageError is a mistake in the command line: exit 2 and the usage line.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// failedWith is a failure that still has a result object to print with
// --json (a batch build where some images failed).
type failedWith struct {
	result any
	err    error
}

func (f *failedWith) Error() string { return f.err.Error() }

// memoryLimit is the Go runtime's soft memory limit: under the 150 MiB
// peak RSS goal with room for what the runtime does not count (the
// binary's text, thread stacks outside the heap).
const memoryLimit = 128 << 20

func main() {
	setRuntimeLimits()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// setRuntimeLimits tunes the collector for nexcage's heap unless the
// environment does (GOGC, GOMEMLIMIT).
func setRuntimeLimits() {
	// A build's heap is mostly byte buffers, which the collector scans in
	// no time: collecting at half the default growth keeps peak RSS well
	// under the 150 MiB goal on the make bench image at no measurable
	// cost in time.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	// Concurrent builds (build --jobs) each hold their own member tree
	// and frame buffers, and their garbage adds up: a soft limit makes
	// the collector work harder only as the process nears it (measured:
	// the factory of 8 with --jobs 2 peaked at 133-147 MiB without it,
	// 122-127 MiB with it, in the same CPU time; the 2 GB image 135 and
	// 129 MiB).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

func run(argv []string, stdout, stderr *os.File) int {
	if len(argv) == 0 {
		printTopHelp(stderr)
		return exitUsage
	}
	name := argv[0]
	switch name {
	case completeCommand:
		return runComplete(argv[1:], stdout)
	case "-h", "--help", "help":
		if name == "help" && len(argv) > 1 {
			if c, ok := commands[argv[1]]; ok {
				printCommandHelp(stdout, c, newFlagSet(c, &opts{}))
				return exitOK
			}
			fmt.Fprintf(stderr, "nexcage: unknown command %q%s\n", argv[1], didYouMeanCommand(argv[1]))
			printTopHelp(stderr)
			return exitUsage
		}
		printTopHelp(stdout)
		return exitOK
	case "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "nexcage: unknown command %q%s\n", name, didYouMeanCommand(name))
		printTopHelp(stderr)
		return exitUsage
	}
	e := &env{stdout: stdout, stderr: stderr, cmd: c}
	fs := newFlagSet(c, &e.opts)
	e.flags = fs
	if err := fs.Parse(argv[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printCommandHelp(stdout, c, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "nexcage %s: %s\nusage: %s\nRun 'nexcage %s --help' for details.\n", c.name, flagError(fs, err), usageLine(c), c.name)
		return exitUsage
	}
	base := progress.Discard
	if !e.json {
		base = progress.New(stderr, e.quiet)
	}
	e.warnings = progress.Record(base)
	e.progress = e.warnings
	noteDeprecated(fs, e.progress)

	ctx, stop := signalContext()
	defer stop()
	// For finding where time goes (make bench points here): a CPU profile
	// of the whole command.
	if p := os.Getenv("NEXCAGE_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	// And where memory goes: the heap profile at the end of the command
	// (its alloc_space shows what the build allocated all along).
	if p := os.Getenv("NEXCAGE_MEMPROFILE"); p != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			if f, err := os.Create(p); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if p := os.Getenv("NEXCAGE_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil {
			trace.Start(f)
			defer func() { trace.Stop(); f.Close() }()
		}
	}
	result, err := c.run(ctx, e, fs.Args())
	if err != nil {
		status, msg := exitFailure, err.Error()
		var ue usageError
		var reported interface{ ExitStatus() int }
		switch {
		case errors.As(err, &reported):
			// The command printed its own report (check: 1 for failures,
			// 3 for warnings only); nothing more goes to stderr.
			status = reported.ExitStatus()
		case errors.As(err, &ue):
			status = exitUsage
			fmt.Fprintf(stderr, "nexcage %s: %s\nusage: %s\nRun 'nexcage %s --help' for details.\n", c.name, ue.msg, usageLine(c), c.name)
		case interrupted(ctx) != 0:
			status, msg = 128+interrupted(ctx), "interrupted; nothing was left half-written"
			fmt.Fprintf(stderr, "nexcage %s: %s\n", c.name, msg)
		default:
			err = hint(e, err)
			msg = err.Error()
			fmt.Fprintf(stderr, "nexcage %s: error: %v\n", c.name, err)
		}
		if e.json {
			var fw *failedWith
			if errors.As(err, &fw) {
				writeResult(stdout, stderr, fw.result, e.warnings.Warnings())
			} else {
				writeResult(stdout, stderr, map[string]any{"ok": false, "command": c.name, "error": msg, "exit_status": status}, e.warnings.Warnings())
			}
		}
		return status
	}
	if e.json {
		writeResult(stdout, stderr, result, e.warnings.Warnings())
	}
	return exitOK
}

func newFlagSet(c *command, o *opts) *pflag.FlagSet {
	fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.BoolVar(&o.json, "json", false, "print one JSON result object on stdout")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "print no progress on stderr")
	if c.flags != nil {
		c.flags(fs, o)
	}
	return fs
}

func usageLine(c *command) string {
	s := "nexcage " + c.name + " [flags]"
	if c.args != "" {
		s += " " + c.args
	}
	return s
}

func printTopHelp(w io.Writer) {
	fmt.Fprint(w, `nexcage turns OCI container images into Proxmox VE LXC templates.

usage: nexcage <command> [flags] [args]

commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Run 'nexcage <command> --help' for a command's flags.
Exit status: 0 success, 1 failure, 2 usage error, 3 warnings only (check).
`)
}

func printCommandHelp(w io.Writer, c *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", usageLine(c), c.summary)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
	}
	fmt.Fprintf(w, "\nflags:\n%s", fs.FlagUsages())
}

// writeResult prints a command's --json result with every warning the
// command reported as its "warnings" array of strings, last, after the
// result's own keys (a library result's own "warnings" key, which repeats
// what was reported, is replaced). A result that is not an object, or
// none at all, cannot carry them: they go to stderr then, never nowhere.
func writeResult(stdout, stderr io.Writer, v any, warnings []string) {
	if v != nil {
		if obj, err := withWarnings(v, warnings); err == nil {
			var out bytes.Buffer
			if json.Indent(&out, obj, "", "  ") == nil {
				out.WriteByte('\n')
				stdout.Write(out.Bytes())
				return
			}
		}
		writeJSON(stdout, v)
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
}

var errNotObject = errors.New("not a JSON object")

// withWarnings re-encodes v as a JSON object with a "warnings" key, keeping
// the order of its other keys.
func withWarnings(v any, warnings []string) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errNotObject
	}
	var out bytes.Buffer
	out.WriteByte('{')
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		if t == "warnings" {
			continue
		}
		k, _ := json.Marshal(t)
		out.Write(k)
		out.WriteByte(':')
		out.Write(val)
		out.WriteByte(',')
	}
	if warnings == nil {
		warnings = []string{}
	}
	w, err := json.Marshal(warnings)
	if err != nil {
		return nil, err
	}
	out.WriteString(`"warnings":`)
	out.Write(w)
	out.WriteByte('}')
	return out.Bytes(), nil
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// The signal that cancelled the context, for the 128+N exit status.
type sigKey struct{}

func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	got := new(int)
	ctx = context.WithValue(ctx, sigKey{}, got)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			*got = int(s.(syscall.Signal))
			cancel()
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

func interrupted(ctx context.Context) int {
	if ctx.Err() == nil {
		return 0
	}
	if p, ok := ctx.Value(sigKey{}).(*int); ok {
		return *p
	}
	return 0
}
