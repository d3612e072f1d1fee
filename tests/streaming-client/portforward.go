package main

// portforward: k8s.io/client-go/tools/portforward (protocol
// portforward.k8s.io). Every forwarded connection gets its own pair of
// streams, error then data, with headers streamType / port / requestID.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	portForwardProtocolV1 = "portforward.k8s.io"

	// k8s.io/api/core/v1 constants.
	streamTypeData             = "data"
	portHeader                 = "port"
	portForwardRequestIDHeader = "requestID"
)

// stdio makes our stdin/stdout one bidirectional local "connection".
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

// forwardResult of one forwarded connection.
type forwardResult struct {
	setupErr  error  // a stream could not be created
	remoteErr string // what the server wrote on the error stream
}

// forwardConnection mirrors client-go's PortForwarder.handleConnection.
func forwardConnection(s *session, local io.ReadWriter, port uint16, requestID int) forwardResult {
	// create error stream
	headers := http.Header{}
	headers.Set(streamTypeHeader, streamTypeError)
	headers.Set(portHeader, strconv.Itoa(int(port)))
	headers.Set(portForwardRequestIDHeader, strconv.Itoa(requestID))
	errorStream, err := s.createStream(headers)
	if err != nil {
		return forwardResult{setupErr: fmt.Errorf("error creating error stream for port %d: %v", port, err)}
	}
	// we're not writing to this stream
	_ = errorStream.Close()
	defer s.removeStreams(errorStream)

	errorChan := make(chan string, 1)
	go func() {
		message, err := io.ReadAll(errorStream)
		switch {
		case err != nil:
			errorChan <- fmt.Sprintf("error reading from error stream for port %d: %v", port, err)
		default:
			errorChan <- string(message)
		}
	}()

	// create data stream (same headers, streamType=data)
	headers.Set(streamTypeHeader, streamTypeData)
	dataStream, err := s.createStream(headers)
	if err != nil {
		return forwardResult{setupErr: fmt.Errorf("error creating forwarding stream for port %d: %v", port, err)}
	}
	defer s.removeStreams(dataStream)

	localError := make(chan struct{})
	remoteDone := make(chan struct{})
	go func() {
		// Copy from the remote side to the local side.
		if _, err := io.Copy(local, dataStream); err != nil && !strings.Contains(err.Error(), "use of closed network connection") {
			fmt.Fprintf(os.Stderr, "orbit-spdy-client: error copying from remote stream to local connection: %v\n", err)
		}
		close(remoteDone)
	}()
	go func() {
		// inform server we're not sending any more data after copy unblocks
		defer dataStream.Close()
		if _, err := io.Copy(dataStream, readerWrapper{local}); err != nil && !strings.Contains(err.Error(), "use of closed network connection") {
			fmt.Fprintf(os.Stderr, "orbit-spdy-client: error copying from local connection to remote stream: %v\n", err)
			close(localError)
		}
	}()

	// wait for either a local->remote error or for copying from remote->local to finish
	select {
	case <-remoteDone:
	case <-localError:
	}
	// always expect something on errorChan (it may be empty)
	return forwardResult{remoteErr: <-errorChan}
}

func runPortForward(rawURL string, port uint16, listen string, keepGoing bool, pingPeriod time.Duration) int {
	s, protocol, err := dialSession(rawURL, []string{portForwardProtocolV1}, pingPeriod)
	if err != nil {
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: %v\n", err)
		return exitSetupFail
	}
	defer s.close()
	// client-go ignores the negotiated value, but kubelet/containerd always
	// answer with it (httpstream.Handshake); insist so a server bug shows.
	if protocol != portForwardProtocolV1 {
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: server negotiated %s %q, expected %q\n",
			headerProtocolVersion, protocol, portForwardProtocolV1)
		return exitSetupFail
	}

	if listen == "" {
		res := forwardConnection(s, stdio{}, port, 0)
		if res.setupErr != nil {
			fmt.Fprintf(os.Stderr, "orbit-spdy-client: %v\n", res.setupErr)
			return exitSetupFail
		}
		if res.remoteErr != "" {
			fmt.Fprintf(os.Stderr, "orbit-spdy-client: an error occurred forwarding -> %d: %s\n", port, res.remoteErr)
			return 1
		}
		return 0
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: unable to listen on %s: %v\n", listen, err)
		return exitSetupFail
	}
	defer ln.Close()
	fmt.Fprintf(os.Stdout, "listening on %s\n", ln.Addr().String())

	fatal := make(chan struct{})
	var fatalOnce sync.Once
	var idLock sync.Mutex
	nextID := 0
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				if !strings.Contains(err.Error(), "use of closed network connection") {
					fmt.Fprintf(os.Stderr, "orbit-spdy-client: error accepting connection: %v\n", err)
				}
				return
			}
			idLock.Lock()
			id := nextID
			nextID++
			idLock.Unlock()
			go func() {
				defer conn.Close()
				res := forwardConnection(s, conn, port, id)
				switch {
				case res.setupErr != nil:
					fmt.Fprintf(os.Stderr, "orbit-spdy-client: requestID %d: %v\n", id, res.setupErr)
				case res.remoteErr != "":
					fmt.Fprintf(os.Stderr, "orbit-spdy-client: requestID %d: an error occurred forwarding %s -> %d: %s\n",
						id, ln.Addr().String(), port, res.remoteErr)
					if !keepGoing {
						// client-go closes the whole connection here, which
						// ends `kubectl port-forward`.
						fatalOnce.Do(func() { close(fatal) })
					}
				}
			}()
		}
	}()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sigs:
		return 0
	case <-fatal:
		return 1
	case <-s.conn.CloseChan():
		fmt.Fprintln(os.Stderr, "orbit-spdy-client: lost connection to the server")
		return 1
	}
}
