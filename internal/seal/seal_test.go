package seal

import "testing"

func TestSumVerify(t *testing.T) {
	k := Key("0123456789abcdef0123456789abcdef")
	mac := k.Sum([]byte("a"), []byte("bc"))
	if !k.Verify(mac, []byte("a"), []byte("bc")) {
		t.Fatal("own MAC refused")
	}
	for _, bad := range [][][]byte{{[]byte("ab"), []byte("c")}, {[]byte("a"), []byte("bd")}, {[]byte("a")}} {
		if k.Verify(mac, bad...) {
			t.Errorf("MAC of a, bc accepted for %q", bad)
		}
	}
	if Key("another key of thirty-two bytes!").Verify(mac, []byte("a"), []byte("bc")) {
		t.Error("MAC accepted under another key")
	}
	if !Key(nil).Verify("-", []byte("x")) || Key(nil).Sum() != "-" {
		t.Error("a nil key must authenticate nothing")
	}
}
