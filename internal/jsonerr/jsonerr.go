// Package jsonerr turns encoding/json's errors into messages that say
// where in the file the problem is.
package jsonerr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// At says where in the file a JSON error is, as a 1-based line
// and column (columns count bytes, as the Go toolchain's positions do).
// encoding/json's Offset is the number of bytes read when the error was
// found, so the byte at fault is the one before it: the offending byte of a
// syntax error (the last byte, for unexpected end of input), the last byte
// of a scalar or the opening bracket of an array or object for a type
// error.
func At(raw []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var off int64
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	default:
		return err.Error()
	}
	at := max(min(int(off), len(raw))-1, 0)
	before := raw[:at]
	line := bytes.Count(before, []byte("\n")) + 1
	col := at - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d: %v", line, col, err)
}
