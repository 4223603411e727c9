package arrival

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"couponsvc/internal/testenv"
)

// The stamp is when the bytes reached the host, not when the process got round to reading
// them (on Linux, where the kernel timestamps them).
func TestStampIsKernelArrivalNotReadTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := Listen(ln)
	time.Sleep(20 * time.Millisecond) // the kernel turns timestamping on asynchronously
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	ctx := ConnContext(context.Background(), sc)

	sent := time.Now()
	if _, err := cl.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(80 * time.Millisecond) // the process is "busy": the bytes wait in the socket
	buf := make([]byte, 16)
	n, err := sc.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	read := time.Now()
	at := Of(ctx)
	if at.Before(sent.Add(-5 * time.Millisecond)) {
		t.Fatalf("arrival %v before the send %v", at, sent)
	}
	if runtime.GOOS == "linux" {
		if lag := read.Sub(at); lag < 70*time.Millisecond {
			t.Fatalf("arrival is %v before the read; want the kernel's receive time, ~80ms before it", lag)
		}
	} else if at.Before(read.Add(-10 * time.Millisecond)) {
		t.Fatalf("arrival %v long before the read %v", at, read)
	}

	// EOF and a deadline behave as net.Conn's do.
	sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := sc.Read(buf); err == nil {
		t.Fatal("read past the deadline returned no error")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("deadline error %v is not a timeout", err)
	}
	sc.SetReadDeadline(time.Time{})
	cl.Close()
	if n, err := sc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want 0, EOF", n, err)
	}
}

// Through net/http: a request counts as arrived when its last byte did, so sending part of it
// early buys nothing; and an untouched context gets now.
func TestHTTPRequestArrivesWithItsLastByte(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Duration, 1)
	srv := &http.Server{
		ConnContext: ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			time.Sleep(40 * time.Millisecond) // scheduling delay in the handler
			got <- time.Since(Of(r.Context()))
			fmt.Fprint(w, "ok")
		}),
	}
	go srv.Serve(Listen(ln))
	defer srv.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	head := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
	c.Write([]byte(head + "he"))
	time.Sleep(100 * time.Millisecond)
	last := time.Now()
	c.Write([]byte("llo"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response to the request within 10s: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "ok") {
		t.Fatalf("body %q", body)
	}
	age := testenv.Receive(t, got, 10*time.Second, "the handler stamps the request")
	if age < 35*time.Millisecond {
		t.Fatalf("arrival only %v before the handler's stamp; want the last byte's arrival, ≥ 40ms before", age)
	}
	if age > time.Since(last)+5*time.Millisecond || age > 90*time.Millisecond {
		t.Fatalf("arrival %v old: the request's first bytes, not its last, were taken", age)
	}

	if d := time.Since(Of(context.Background())); d < 0 || d > time.Millisecond {
		t.Fatalf("no connection in the context: Of is %v from now", d)
	}
}
