package lxc

// DecodeText is PVE's decode_text (PVE::ParseUtils), by which
// parse_pct_config reads a description line. write_pct_config
// percent-encodes ':', '%', control and non-ASCII bytes (encode_text), so
// a description "nexcage: template=local:vztmpl/x" stands in the config
// file as "#nexcage%3A template=local%3Avztmpl/x". As uri_unescape, only a
// '%' followed by two hex digits is decoded; the text is otherwise kept.
// Parse keeps Description as the file has it: DecodeText gives what PVE's
// API reports.
func DecodeText(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// EncodeText is PVE's encode_text (PVE::ParseUtils), by which
// write_pct_config writes each description line: every byte outside
// printable ASCII, and ':' and '%', as %XX (upper-case hex, as
// uri_escape). s is taken as UTF-8, as Perl's Encode::encode("utf8").
func EncodeText(s string) string {
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '%' || c == ':' || c >= 0x7f {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}
