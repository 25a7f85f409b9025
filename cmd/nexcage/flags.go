package main

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

// Flag values are checked when the command line is parsed, so a bad one
// is a usage error (exit 2) before anything touches the disk or the
// network, and every message has the same shape:
//
//	--FLAG: "VALUE" is not ...; <what is accepted>
//
// The Values below keep the flag's Go field a plain string or int, so the
// commands read them as before.

// badValue is the cause a Value's Set returns; run prints it after the
// flag's name.
type badValue struct{ msg string }

func (b badValue) Error() string { return b.msg }

func badValuef(format string, args ...any) error { return badValue{fmt.Sprintf(format, args...)} }

// enumValue is a string flag that takes one of a fixed list of words.
type enumValue struct {
	p      *string
	values []string
	// aliases are other spellings accepted for a value (zst for zstd).
	aliases map[string]string
}

func (v *enumValue) String() string { return *v.p }
func (v *enumValue) Type() string   { return "string" }
func (v *enumValue) Set(s string) error {
	w := strings.ToLower(s)
	if a, ok := v.aliases[w]; ok {
		w = a
	}
	for _, ok := range v.values {
		if w == ok {
			*v.p = w
			return nil
		}
	}
	return badValuef("%q is not one of %s", s, strings.Join(v.values, ", "))
}

func enumVar(fs *pflag.FlagSet, p *string, name, def string, values []string, aliases map[string]string, usage string) {
	*p = def
	fs.Var(&enumValue{p: p, values: values, aliases: aliases}, name, usage)
}

// intValue is an int flag with a range; zero, when allowed, means "the
// default" (the next free VMID, PVE's memory).
type intValue struct {
	p        *int
	min, max int
	zeroOK   bool
	// what completes "a VMID is ...": the unit and range in words.
	what string
}

func (v *intValue) String() string { return strconv.Itoa(*v.p) }
func (v *intValue) Type() string   { return "int" }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return badValuef("%q is not a whole number; %s", s, v.what)
	}
	if (n == 0 && v.zeroOK) || (n >= v.min && n <= v.max) {
		*v.p = n
		return nil
	}
	return badValuef("%d is out of range; %s", n, v.what)
}

func intVar(fs *pflag.FlagSet, p *int, name, short string, def, min, max int, zeroOK bool, what, usage string) {
	*p = def
	fs.VarP(&intValue{p: p, min: min, max: max, zeroOK: zeroOK, what: what}, name, short, usage)
}

// int64Value is an int64 flag with a range (a count of entries).
type int64Value struct {
	p        *int64
	min, max int64
	what     string
}

func (v *int64Value) String() string { return strconv.FormatInt(*v.p, 10) }
func (v *int64Value) Type() string   { return "int" }
func (v *int64Value) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return badValuef("%q is not a whole number; %s", s, v.what)
	}
	if n < v.min || n > v.max {
		return badValuef("%d is out of range; %s", n, v.what)
	}
	*v.p = n
	return nil
}

func int64Var(fs *pflag.FlagSet, p *int64, name string, def, min, max int64, what, usage string) {
	*p = def
	fs.Var(&int64Value{p: p, min: min, max: max, what: what}, name, usage)
}

// checkedString is a string flag whose value must pass check (a size, a
// duration, a platform); the command still parses the string itself.
type checkedString struct {
	p     *string
	check func(string) error
}

func (v *checkedString) String() string { return *v.p }
func (v *checkedString) Type() string   { return "string" }
func (v *checkedString) Set(s string) error {
	if err := v.check(s); err != nil {
		return err
	}
	*v.p = s
	return nil
}

func checkedVar(fs *pflag.FlagSet, p *string, name, def string, check func(string) error, usage string) {
	*p = def
	fs.Var(&checkedString{p: p, check: check}, name, usage)
}

// parseSize reads a byte count with an optional K, M, G or T suffix
// (powers of 1024).
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	num, mult := s, int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult != 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, badValuef("%q is not a size; write a positive whole number of bytes with an optional K, M, G or T suffix, e.g. 64G or 500M", s)
	}
	if n > math.MaxInt64/mult {
		return 0, badValuef("%q is too large; the most is 8388607T", s)
	}
	return n * mult, nil
}

func checkSize(s string) error { _, err := parseSize(s); return err }

func checkDuration(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return badValuef("%q is not a duration; write a positive number with a unit (s, m or h), e.g. 30s or 5m", s)
	}
	return nil
}

func checkPlatform(s string) error {
	if _, err := rootfs.ParsePlatform(s); err != nil {
		// The library's message starts "platform "amd64" is ...".
		return badValuef("%s", strings.TrimPrefix(err.Error(), "platform "))
	}
	return nil
}

// flagError rewrites pflag's parse errors in plain words: Go's own
// (strconv.ParseInt: parsing "abc": invalid syntax) mean nothing to a user,
// and a mistyped flag gets a suggestion.
func flagError(fs *pflag.FlagSet, err error) string {
	var iv *pflag.InvalidValueError
	var ne *pflag.NotExistError
	var vr *pflag.ValueRequiredError
	switch {
	case errors.As(err, &iv):
		f := iv.GetFlag()
		var bv badValue
		if errors.As(err, &bv) {
			return fmt.Sprintf("--%s: %s", f.Name, bv.msg)
		}
		switch f.Value.Type() {
		case "bool":
			return fmt.Sprintf("--%s: %q is not true or false; write --%s or --%s=false", f.Name, iv.GetValue(), f.Name, f.Name)
		case "int":
			return fmt.Sprintf("--%s: %q is not a whole number", f.Name, iv.GetValue())
		}
		return fmt.Sprintf("--%s: %q is not accepted", f.Name, iv.GetValue())
	case errors.As(err, &vr):
		msg := err.Error()
		if vr.GetSpecifiedName() == "version" {
			msg += " (--version is the template version; nexcage's own version is `nexcage --version`)"
		}
		return msg
	case errors.As(err, &ne):
		msg := err.Error()
		if ne.GetSpecifiedShortnames() != "" {
			return msg
		}
		var names []string
		fs.VisitAll(func(f *pflag.Flag) {
			if !f.Hidden {
				names = append(names, f.Name)
			}
		})
		if s := suggest(ne.GetSpecifiedName(), names); s != "" {
			msg += "; did you mean --" + s + "?"
		}
		return msg
	}
	return err.Error()
}

// suggest returns the candidate closest to the mistyped word, when it is
// close enough to be a typo (a third of its letters at most, and at least
// one edit allowed), else "".
func suggest(typed string, candidates []string) string {
	best, bestDist := "", 0
	sorted := append([]string(nil), candidates...)
	sort.Strings(sorted) // a tie goes to the same candidate every run
	for _, c := range sorted {
		d := editDistance(typed, c)
		if best == "" || d < bestDist {
			best, bestDist = c, d
		}
	}
	limit := max(1, len(typed)/3)
	if best == "" || bestDist > limit {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of two neighbours each
// cost 1, so "biuld" is one edit from "build".
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// deprecatedFlags are old spellings still accepted, hidden from --help,
// with the name that replaced them.
var deprecatedFlags = map[string]string{
	"version": "template-version",
}

// noteDeprecated warns once for each old spelling used.
func noteDeprecated(fs *pflag.FlagSet, rep progress.Reporter) {
	for old, now := range deprecatedFlags {
		if f := fs.Lookup(old); f != nil && f.Changed {
			rep.Warn("--%s is now --%s; the old spelling will go away", old, now)
		}
	}
}

// didYouMeanCommand is "; did you mean build?" for a mistyped command.
func didYouMeanCommand(typed string) string {
	names := []string{"--help", "--version"} // what run takes before a command
	if !strings.HasPrefix(typed, "-") {
		names = names[:0]
		for n := range commands {
			names = append(names, n)
		}
	}
	if s := suggest(typed, names); s != "" {
		return fmt.Sprintf("; did you mean %s?", s)
	}
	return ""
}
