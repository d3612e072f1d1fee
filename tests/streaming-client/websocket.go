package main

// ws-exec / ws-attach: k8s.io/client-go/tools/remotecommand's websocket
// executor (NewWebSocketExecutor, what `crictl --transport websocket` and
// kubectl 1.30+ use): one websocket, every binary message prefixed with its
// channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); with
// v5.channel.k8s.io the client closes its stdin with the message {255, 0}.
// The websocket itself is github.com/gorilla/websocket (Debian package
// golang-github-gorilla-websocket-dev), the library client-go uses.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sync"

	"github.com/gorilla/websocket"
)

const (
	wsStreamProtocolV5 = "v5.channel.k8s.io"
	wsStreamClose      = 255

	wsChannelStdin  = 0
	wsChannelStdout = 1
	wsChannelStderr = 2
	wsChannelError  = 3
	wsChannelResize = 4
)

// Offered in client-go's order (v5 first, then what the server may fall back to).
var wsProtocols = []string{
	wsStreamProtocolV5,
	streamProtocolV4,
	"v3.channel.k8s.io",
	"v2.channel.k8s.io",
	"channel.k8s.io",
}

func runWebsocketCommand(rawURL string, opts streamOptions, offer []string) int {
	u, err := url.Parse(rawURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: bad URL %q: %v\n", rawURL, err)
		return exitSetupFail
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	dialer := websocket.Dialer{Subprotocols: offer}
	conn, resp, err := dialer.Dial(u.String(), nil)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = fmt.Sprintf(" (HTTP %d: %s)", resp.StatusCode, bytes.TrimSpace(b))
		}
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: websocket dial: %v%s\n", err, body)
		return exitSetupFail
	}
	defer conn.Close()
	protocol := conn.Subprotocol()
	fmt.Fprintf(os.Stderr, "orbit-spdy-client: websocket protocol %s\n", protocol)

	var writeMu sync.Mutex
	send := func(channel byte, data []byte) error {
		writeMu.Lock()
		defer writeMu.Unlock()
		return conn.WriteMessage(websocket.BinaryMessage, append([]byte{channel}, data...))
	}
	if opts.tty && opts.resize != nil {
		b, _ := json.Marshal(opts.resize)
		if err := send(wsChannelResize, b); err != nil {
			fmt.Fprintf(os.Stderr, "orbit-spdy-client: error sending resize: %v\n", err)
		}
	}
	if opts.stdin {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := os.Stdin.Read(buf)
				if n > 0 {
					if send(wsChannelStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					break
				}
			}
			if protocol == wsStreamProtocolV5 {
				writeMu.Lock()
				_ = conn.WriteMessage(websocket.BinaryMessage, []byte{wsStreamClose, wsChannelStdin})
				writeMu.Unlock()
			}
		}()
	}

	// readDemuxLoop: until the server closes the connection.
	var errorMsg []byte
	for {
		kind, msg, err := conn.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived) {
				if _, ok := err.(*websocket.CloseError); !ok {
					fmt.Fprintf(os.Stderr, "orbit-spdy-client: websocket read: %v\n", err)
					return exitRemoteFail
				}
			}
			break
		}
		if kind != websocket.BinaryMessage || len(msg) == 0 {
			continue
		}
		if protocol == wsStreamProtocolV5 && msg[0] == wsStreamClose {
			continue // the server closed a channel; its data is complete
		}
		data := msg[1:]
		switch msg[0] {
		case wsChannelStdout:
			_, _ = os.Stdout.Write(data)
		case wsChannelStderr:
			_, _ = os.Stderr.Write(data)
		case wsChannelError:
			errorMsg = append(errorMsg, data...)
		}
	}
	if len(errorMsg) == 0 {
		return 0
	}
	if protocol == wsStreamProtocolV5 || protocol == streamProtocolV4 {
		code, err := decodeStatusV4(errorMsg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err.Error())
			return exitRemoteFail
		}
		return code
	}
	fmt.Fprintln(os.Stderr, string(errorMsg))
	return exitRemoteFail
}
