// Package errkind attaches a sentinel error (for errors.Is) to a message
// without repeating the sentinel's words in what the user reads.
package errkind

import (
	"fmt"
	"strings"
)

type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// Errorf formats like fmt.Errorf; errors.Is(result, kind) holds.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

// Replace rewrites old to new in err's message, keeping errors.Is and
// errors.As working through the original.
func Replace(err error, old, new string) error {
	if err == nil || !strings.Contains(err.Error(), old) {
		return err
	}
	return &replaced{err: err, msg: strings.ReplaceAll(err.Error(), old, new)}
}

type replaced struct {
	err error
	msg string
}

func (r *replaced) Error() string { return r.msg }
func (r *replaced) Unwrap() error { return r.err }
