package arrival

import (
	"net"
	"testing"
)

// BenchmarkRead is one small request's read through a stamping connection ("stamped") and
// through the plain *net.TCPConn it wraps ("plain"), over loopback.
func BenchmarkRead(b *testing.B) {
	for _, mode := range []string{"plain", "stamped"} {
		b.Run(mode, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			cl, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			var sc net.Conn
			if mode == "stamped" {
				sc, err = Listen(ln).Accept()
			} else {
				sc, err = ln.Accept()
			}
			if err != nil {
				b.Fatal(err)
			}
			defer sc.Close()
			req := make([]byte, 180)
			buf := make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				cl.Write(req)
				for got := 0; got < len(req); {
					n, err := sc.Read(buf)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
		})
	}
}
