package convert

import (
	"os"
	"path/filepath"
	"testing"
)

// syntaxBad has a stray comma at line 3, column 30.
const syntaxBad = "{\n  \"ociVersion\": \"1.2.0\",\n  \"root\": {\"path\": \"rootfs\"},,\n}\n"

// TestLoadBundleBadJSON is the message users see for a broken config.json.
func TestLoadBundleBadJSON(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(syntaxBad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadBundle(dir)
	want := cfg + " is not a valid OCI runtime config: line 3, column 30: invalid character ',' looking for beginning of object key string"
	if err == nil || err.Error() != want {
		t.Errorf("LoadBundle: %v\nwant %s", err, want)
	}
}
