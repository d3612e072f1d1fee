package main

// The SPDY upgrade handshake and connection bookkeeping, mirroring
// k8s.io/apimachinery/pkg/util/httpstream/spdy (SpdyRoundTripper + connection)
// and k8s.io/client-go/transport/spdy (Negotiate).

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

const (
	headerConnection      = "Connection"
	headerUpgrade         = "Upgrade"
	headerProtocolVersion = "X-Stream-Protocol-Version"
	headerSpdy31          = "SPDY/3.1"

	// k8s.io/apimachinery/pkg/util/httpstream/spdy: createStreamResponseTimeout
	createStreamResponseTimeout = 30 * time.Second
	dialTimeout                 = 30 * time.Second
	handshakeTimeout            = 30 * time.Second
)

// setupError is a failure to establish the session (exit 126).
type setupError struct{ msg string }

func (e *setupError) Error() string { return e.msg }

func setupErrorf(format string, args ...interface{}) error {
	return &setupError{fmt.Sprintf(format, args...)}
}

// session is one upgraded SPDY connection plus the streams we created on it
// (apimachinery's spdy.connection).
type session struct {
	conn    *spdystream.Connection
	raw     net.Conn
	lock    sync.Mutex
	streams map[uint32]*spdystream.Stream
}

// readerConn serves reads through the bufio.Reader that parsed the HTTP
// response, so bytes the server sent right after the 101 are not lost.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialSession performs the upgrade handshake on rawURL offering protocols
// (in preference order) and returns the session and the protocol the server
// selected (X-Stream-Protocol-Version of the 101 response; may be "").
func dialSession(rawURL string, protocols []string, pingPeriod time.Duration) (*session, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", setupErrorf("invalid URL %q: %v", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, "", setupErrorf("invalid URL %q: scheme must be http or https", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			host = net.JoinHostPort(u.Hostname(), "443")
		} else {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
	}

	// client-go: http.NewRequest(method, url, nil); Negotiate() adds one
	// X-Stream-Protocol-Version line per protocol; SpdyRoundTripper.RoundTrip
	// adds Connection/Upgrade and writes the request with req.Write.
	req, err := http.NewRequest(http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, "", setupErrorf("error creating request: %v", err)
	}
	for _, p := range protocols {
		req.Header.Add(headerProtocolVersion, p)
	}
	req.Header.Add(headerConnection, "Upgrade")
	req.Header.Add(headerUpgrade, headerSpdy31)

	dialer := &net.Dialer{Timeout: dialTimeout}
	var conn net.Conn
	if u.Scheme == "https" {
		conn, err = tls.DialWithDialer(dialer, "tcp", host, &tls.Config{
			ServerName:         u.Hostname(),
			InsecureSkipVerify: true, // test client
			NextProtos:         []string{"http/1.1"},
		})
	} else {
		conn, err = dialer.Dial("tcp", host)
	}
	if err != nil {
		return nil, "", setupErrorf("error dialing %s: %v", host, err)
	}

	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, "", setupErrorf("error sending upgrade request to %s: %v", host, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, "", setupErrorf("error reading upgrade response from %s: %v", host, err)
	}

	// SpdyRoundTripper.NewConnection's checks.
	connectionHeader := strings.ToLower(resp.Header.Get(headerConnection))
	upgradeHeader := strings.ToLower(resp.Header.Get(headerUpgrade))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		!strings.Contains(connectionHeader, "upgrade") ||
		!strings.Contains(upgradeHeader, strings.ToLower(headerSpdy31)) {
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		conn.Close()
		msg := strings.TrimSpace(string(body))
		if rerr != nil {
			msg = fmt.Sprintf("%s (error reading body: %v)", msg, rerr)
		}
		return nil, "", setupErrorf("unable to upgrade connection: HTTP %s (Connection: %q, Upgrade: %q): %s",
			resp.Status, resp.Header.Get(headerConnection), resp.Header.Get(headerUpgrade), msg)
	}
	protocol := resp.Header.Get(headerProtocolVersion)
	_ = conn.SetDeadline(time.Time{})

	var streamConn net.Conn = conn
	if n := br.Buffered(); n > 0 {
		// client-go hands the raw conn to spdystream and would silently lose
		// these bytes; keep them, but make the server bug visible.
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: warning: server sent %d bytes right after the 101 response, before any client frame (client-go would drop them)\n", n)
		streamConn = &readerConn{Conn: conn, r: br}
	}

	spdyConn, err := spdystream.NewConnection(streamConn, false)
	if err != nil {
		conn.Close()
		return nil, "", setupErrorf("error creating SPDY connection: %v", err)
	}
	s := &session{conn: spdyConn, raw: conn, streams: map[uint32]*spdystream.Stream{}}
	go spdyConn.Serve(s.rejectServerStream)
	if pingPeriod > 0 {
		go s.sendPings(pingPeriod)
	}
	return s, protocol, nil
}

// rejectServerStream handles SYN_STREAMs initiated by the server: neither
// remotecommand nor portforward ever expects one, so reset them (this is
// apimachinery's reject path: stream.Reset() => RST_STREAM CANCEL).
func (s *session) rejectServerStream(stream *spdystream.Stream) {
	fmt.Fprintf(os.Stderr, "orbit-spdy-client: warning: rejecting server-initiated stream %d (headers %v)\n",
		stream.Identifier(), stream.Headers())
	_ = stream.Reset()
}

// sendPings mirrors apimachinery's connection.sendPings.
func (s *session) sendPings(period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.conn.CloseChan():
			return
		case <-t.C:
		}
		_, _ = s.conn.Ping()
	}
}

// createStream sends a SYN_STREAM with headers and waits (up to 30s) for the
// server's SYN_REPLY, like apimachinery's connection.CreateStream.
func (s *session) createStream(headers http.Header) (*spdystream.Stream, error) {
	desc := describeHeaders(headers)
	stream, err := s.conn.CreateStream(headers, nil, false)
	if err != nil {
		return nil, fmt.Errorf("error creating stream %s: %v", desc, err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- stream.WaitTimeout(createStreamResponseTimeout) }()
	select {
	case err = <-waitErr:
	case <-s.conn.CloseChan():
		// spdystream's WaitTimeout doesn't notice a dead connection; report it
		// now instead of after 30s. (Give a reply that raced the close a chance.)
		select {
		case err = <-waitErr:
		case <-time.After(100 * time.Millisecond):
			err = errors.New("connection closed by the server before it replied")
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, spdystream.ErrTimeout):
		return nil, fmt.Errorf("stream %d %s: no SYN_REPLY from the server within %s", stream.Identifier(), desc, createStreamResponseTimeout)
	case errors.Is(err, spdystream.ErrReset):
		return nil, fmt.Errorf("stream %d %s: server answered the SYN_STREAM with RST_STREAM", stream.Identifier(), desc)
	default:
		return nil, fmt.Errorf("stream %d %s: %v", stream.Identifier(), desc, err)
	}
	s.lock.Lock()
	s.streams[stream.Identifier()] = stream
	s.lock.Unlock()
	return stream, nil
}

// removeStreams forgets streams (apimachinery connection.RemoveStreams):
// they will not be reset by close().
func (s *session) removeStreams(streams ...*spdystream.Stream) {
	s.lock.Lock()
	for _, st := range streams {
		if st != nil {
			delete(s.streams, st.Identifier())
		}
	}
	s.lock.Unlock()
}

// close mirrors apimachinery's connection.Close: Reset() every registered
// stream (RST_STREAM CANCEL for those we have not half-closed ourselves), then
// spdystream's Close (GOAWAY, then the TCP connection is closed once no
// stream is left).
func (s *session) close() {
	s.lock.Lock()
	for _, st := range s.streams {
		_ = st.Reset()
	}
	s.streams = map[uint32]*spdystream.Stream{}
	s.lock.Unlock()
	_ = s.conn.Close()
}

func describeHeaders(h http.Header) string {
	parts := []string{}
	for _, k := range []string{"streamType", "port", "requestID"} {
		if v := h.Get(k); v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return "(" + strings.Join(parts, " ") + ")"
}
