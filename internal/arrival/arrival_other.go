//go:build !linux

package arrival

import "net"

// conn stamps each read with the time it returned.
type conn struct {
	*net.TCPConn
	st stamp
}

func newConn(tc *net.TCPConn) net.Conn { return &conn{TCPConn: tc} }

func (c *conn) stamp() *stamp { return &c.st }

func (c *conn) Read(b []byte) (int, error) {
	return readNow(c.TCPConn, &c.st, b)
}

func listenTimestamps(net.Listener) {}
