package lxc

import "testing"

// TestEncodeTextInvertsDecodeText: every byte survives EncodeText then
// DecodeText, and the encoded text keeps only what encode_text leaves
// alone (printable ASCII but ':' and '%'), so a line of it is one
// description line of PVE's config file. PVE's own write/parse agree
// (pvetest TestStandInConfigAgreesWithPVE).
func TestEncodeTextInvertsDecodeText(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	for _, s := range []string{string(all), "nexcage: template=local:vztmpl/a%41.tar.zst", "héllo ✓", ""} {
		enc := EncodeText(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c < 0x20 || c >= 0x7f || c == ':' || (c == '%' && (i+2 >= len(enc) || !isHex(enc[i+1]) || !isHex(enc[i+2]))) {
				t.Errorf("EncodeText(%q) = %q keeps %q", s, enc, c)
			}
		}
		if got := DecodeText(enc); got != s {
			t.Errorf("DecodeText(EncodeText(%q)) = %q", s, got)
		}
	}
	if got := EncodeText("a:b%c\x01é"); got != "a%3Ab%25c%01%C3%A9" {
		t.Errorf("EncodeText = %q", got)
	}
}
