package arrival

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// conn reads with recvmsg and keeps the kernel's receive timestamp of each read.
type conn struct {
	*net.TCPConn
	raw syscall.RawConn
	oob []byte
	st  stamp
	ts  bool // the kernel was asked for timestamps

	// recvmsg's arguments and results live in the connection, and its closure is made once:
	// made per Read, with what it captures and unix.Recvmsg's own, it cost five allocations
	// per request.
	recv    func(fd uintptr) bool
	iov     unix.Iovec
	msg     unix.Msghdr
	n, oobn int
	errno   unix.Errno
}

func newConn(tc *net.TCPConn) net.Conn {
	raw, err := tc.SyscallConn()
	if err != nil {
		return tc
	}
	c := &conn{TCPConn: tc, raw: raw, oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}
	c.recv = func(fd uintptr) bool {
		c.msg.Control = &c.oob[0]
		c.msg.SetControllen(len(c.oob))
		r, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), 0)
		c.n, c.oobn, c.errno = int(r), int(c.msg.Controllen), errno
		return errno != unix.EAGAIN && errno != unix.EINTR
	}
	raw.Control(func(fd uintptr) { c.ts = enableTimestamps(fd) })
	return c
}

// enableTimestamps asks the kernel to timestamp what the socket receives. Set on a listening
// socket, its connections inherit it, and the kernel, which turns receive timestamping on
// asynchronously the first time it is asked, has done so before the first request.
func enableTimestamps(fd uintptr) bool {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) == nil
}

func listenTimestamps(ln net.Listener) {
	if tl, ok := ln.(*net.TCPListener); ok {
		if raw, err := tl.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { enableTimestamps(fd) })
		}
	}
}

func (c *conn) stamp() *stamp { return &c.st }

func (c *conn) Read(b []byte) (int, error) {
	if !c.ts {
		return readNow(c.TCPConn, &c.st, b)
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.iov.Base = &b[0]
	c.iov.SetLen(len(b))
	c.msg.Iov = &c.iov
	c.msg.SetIovlen(1)
	err := c.raw.Read(c.recv)
	c.iov.Base = nil // keep no caller's buffer alive
	n, oobn, errno := c.n, c.oobn, c.errno
	switch {
	case err != nil: // deadline, closed connection: already a *net.OpError
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("recvmsg", errno)}
	case n == 0:
		return 0, io.EOF
	}
	at := time.Now().UnixNano()
	if k, ok := kernelTime(c.oob[:oobn]); ok {
		at = k
	}
	c.st.set(at)
	return n, nil
}

// kernelTime finds the SCM_TIMESTAMPNS message in a recvmsg's control data.
func kernelTime(oob []byte) (int64, bool) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			return ts.Nano(), true
		}
		oob = rest
	}
	return 0, false
}
