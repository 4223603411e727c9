// Package arrival tells when an HTTP request reached this host: the time the kernel received
// the last bytes read for it, before any scheduling, parsing or routing in this process.
//
// First come, first served is decided by arrival. Under a flash crowd the service's goroutines
// wait their turn for the CPUs; a timestamp taken in the handler would order requests by when
// they were scheduled, which under load differs from the order they arrived by milliseconds,
// and a stock boundary falls inside those milliseconds. On Linux the listener's connections ask
// the kernel for receive timestamps (SO_TIMESTAMPNS) and read with recvmsg; elsewhere, and if
// the kernel gives none, the time of the read stands in.
//
// The stamp is that of the last read, so a request counts as arrived once its last byte has:
// sending part of a request early buys no place in the queue.
package arrival

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// Listen wraps ln so that its TCP connections record arrival times. Serve with ConnContext.
func Listen(ln net.Listener) net.Listener {
	listenTimestamps(ln)
	return listener{ln}
}

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return newConn(tc), nil
	}
	return c, nil
}

// stamp is shared by every kind of stamping connection: the last read's arrival, in Unix ns.
type stamp struct{ last atomic.Int64 }

func (s *stamp) set(unixNano int64) { s.last.Store(unixNano) }

// readNow reads, stamping the read with the time it returned.
func readNow(c *net.TCPConn, s *stamp, b []byte) (int, error) {
	n, err := c.Read(b)
	if n > 0 {
		s.set(time.Now().UnixNano())
	}
	return n, err
}

type ctxKey struct{}

// ConnContext is an http.Server.ConnContext that makes the connection's stamp reachable from
// its requests' contexts.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if s, ok := c.(interface{ stamp() *stamp }); ok {
		return context.WithValue(ctx, ctxKey{}, s.stamp())
	}
	return ctx
}

// Of is when the request whose context ctx is reached this host: the arrival of the last bytes
// read on its connection, which is the request itself once its body has been read. It is now
// when the connection was not accepted through Listen, and never later than now.
func Of(ctx context.Context) time.Time {
	now := time.Now()
	s, _ := ctx.Value(ctxKey{}).(*stamp)
	if s == nil {
		return now
	}
	at := s.last.Load()
	if at == 0 || at > now.UnixNano() {
		return now
	}
	// Keep now's monotonic reading: deadlines computed from the arrival stay immune to wall
	// clock steps.
	return now.Add(-time.Duration(now.UnixNano() - at))
}
