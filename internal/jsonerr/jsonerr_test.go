package jsonerr

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// syntaxBad has a stray comma at line 3, column 30.
const syntaxBad = "{\n  \"ociVersion\": \"1.2.0\",\n  \"root\": {\"path\": \"rootfs\"},,\n}\n"

func TestJSONErrorAt(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		line, col int
		at        string // the byte at line:col, "" past the end
		msg       string
	}{
		{"bad value", `{"a": x}`, 1, 7, "x", "invalid character 'x' looking for beginning of value"},
		{"first byte", `x`, 1, 1, "x", "invalid character 'x'"},
		{"line 3", syntaxBad, 3, 30, ",", "invalid character ',' looking for beginning of object key string"},
		{"after a tab", "{\n\t\"a\" 1}", 2, 6, "1", "invalid character '1' after object key"},
		{"after the value", "{\"a\": 1}\n\n x", 3, 2, "x", "invalid character 'x' after top-level value"},
		// A newline is reported on the line it ends, not the next one.
		{"newline in string", "{\"a\": \"x\ny\"}", 1, 9, "\n", "invalid character '\\n' in string literal"},
		// Unexpected end of input: the last byte read.
		{"end of input", "{\"a\": 1", 1, 7, "1", "unexpected end of JSON input"},
		{"end after newline", "{\"a\": 1\n", 1, 8, "\n", "unexpected end of JSON input"},
		{"empty", "", 1, 1, "", "unexpected end of JSON input"},
		// Columns count bytes: é is two.
		{"multibyte", "{\"é\": x}", 1, 8, "x", "invalid character 'x'"},
		// Type errors: a scalar's last byte, an array's or object's opening bracket.
		{"type number", "{\n  \"ociVersion\": 1\n}", 2, 17, "1", "cannot unmarshal number into Go struct field Spec.ociVersion of type string"},
		{"type string", "{\n\t\"process\": {\n\t\t\"terminal\": \"yes\"\n\t}\n}", 3, 19, `"`, "cannot unmarshal string into Go struct field"},
		{"type array", `{"ociVersion": ["1"]}`, 1, 16, "[", "cannot unmarshal array into Go struct field Spec.ociVersion of type string"},
		{"type object", "{\"hostname\":\n{}}", 2, 1, "{", "cannot unmarshal object into Go struct field Spec.hostname of type string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var spec rspec.Spec
			err := json.Unmarshal([]byte(tc.in), &spec)
			if err == nil {
				t.Fatalf("%q parsed", tc.in)
			}
			got := At([]byte(tc.in), err)
			want := fmt.Sprintf("line %d, column %d: ", tc.line, tc.col)
			if !strings.HasPrefix(got, want) || !strings.Contains(got, tc.msg) {
				t.Errorf("At(%q) = %q, want %q…%s…", tc.in, got, want, tc.msg)
			}
			// The position names the byte an editor shows there.
			lines := strings.SplitAfter(tc.in, "\n")
			if tc.line > len(lines) || tc.col > len(lines[tc.line-1])+1 {
				t.Fatalf("%d:%d is outside %q", tc.line, tc.col, tc.in)
			}
			if rest := lines[tc.line-1][tc.col-1:]; !strings.HasPrefix(rest, tc.at) || (tc.at == "") != (rest == "") {
				t.Errorf("%d:%d of %q starts %q, want %q", tc.line, tc.col, tc.in, rest, tc.at)
			}
		})
	}
	if got := At([]byte("{}"), errors.New("boom")); got != "boom" {
		t.Errorf("not a JSON error: %q, want it unchanged", got)
	}
}
