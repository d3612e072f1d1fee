package main

// exec / attach: k8s.io/client-go/tools/remotecommand, protocol
// v4.channel.k8s.io (streamProtocolV4 = V3 streams + V4 error decoding).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

const (
	streamProtocolV4 = "v4.channel.k8s.io"

	// k8s.io/api/core/v1 constants.
	streamTypeHeader = "streamType"
	streamTypeError  = "error"
	streamTypeStdin  = "stdin"
	streamTypeStdout = "stdout"
	streamTypeStderr = "stderr"
	streamTypeResize = "resize"

	nonZeroExitCodeReason = "NonZeroExitCode" // metav1.StatusReason
	exitCodeCauseType     = "ExitCode"        // metav1.CauseType
)

// Offered in client-go's order (NewSPDYExecutorForTransports).
var remoteCommandProtocols = []string{
	streamProtocolV4,
	"v3.channel.k8s.io",
	"v2.channel.k8s.io",
	"channel.k8s.io",
}

type terminalSize struct {
	Width  uint16
	Height uint16
}

type streamOptions struct {
	stdin, stdout, stderr, tty bool
	resize                     *terminalSize
}

// status is the subset of metav1.Status the v4 error stream carries.
type status struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Details *struct {
		Causes []struct {
			Type    string `json:"reason,omitempty"` // metav1.StatusCause.Type is serialized as "reason"
			Message string `json:"message,omitempty"`
			Field   string `json:"field,omitempty"`
		} `json:"causes,omitempty"`
	} `json:"details,omitempty"`
}

// readerWrapper hides io.WriterTo etc. so io.Copy uses its 32KiB buffer and
// sends one data frame per read, like client-go's readerWrapper.
type readerWrapper struct{ r io.Reader }

func (r readerWrapper) Read(p []byte) (int, error) { return r.r.Read(p) }

func runRemoteCommand(rawURL string, opts streamOptions, pingPeriod time.Duration) int {
	s, protocol, err := dialSession(rawURL, remoteCommandProtocols, pingPeriod)
	if err != nil {
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: %v\n", err)
		return exitSetupFail
	}
	defer s.close()
	if protocol != streamProtocolV4 {
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: server negotiated %s %q; this client only implements %q (which kubelet/containerd select)\n",
			headerProtocolVersion, protocol, streamProtocolV4)
		return exitSetupFail
	}

	// createStreams (v2 + v3): error, stdin, stdout, stderr (not with a tty),
	// resize (only with a tty); each waits for its SYN_REPLY.
	create := func(streamType string) (*spdystream.Stream, bool) {
		h := http.Header{}
		h.Set(streamTypeHeader, streamType)
		st, err := s.createStream(h)
		if err != nil {
			fmt.Fprintf(os.Stderr, "orbit-spdy-client: %v\n", err)
			return nil, false
		}
		return st, true
	}
	var errorStream, stdinStream, stdoutStream, stderrStream, resizeStream *spdystream.Stream
	var ok bool
	if errorStream, ok = create(streamTypeError); !ok {
		return exitSetupFail
	}
	if opts.stdin {
		if stdinStream, ok = create(streamTypeStdin); !ok {
			return exitSetupFail
		}
	}
	if opts.stdout {
		if stdoutStream, ok = create(streamTypeStdout); !ok {
			return exitSetupFail
		}
	}
	if opts.stderr && !opts.tty {
		if stderrStream, ok = create(streamTypeStderr); !ok {
			return exitSetupFail
		}
	}
	if opts.tty {
		if resizeStream, ok = create(streamTypeResize); !ok {
			return exitSetupFail
		}
	}

	// watchErrorStream
	type errResult struct {
		msg []byte
		err error
	}
	errorChan := make(chan errResult, 1)
	go func() {
		msg, err := io.ReadAll(errorStream)
		errorChan <- errResult{msg, err}
	}()

	// handleResizes: json.Encoder => `{"Width":W,"Height":H}\n`, one frame.
	if resizeStream != nil && opts.resize != nil {
		if err := json.NewEncoder(resizeStream).Encode(opts.resize); err != nil {
			fmt.Fprintf(os.Stderr, "orbit-spdy-client: error sending resize: %v\n", err)
		}
	}

	// copyStdin: copy our stdin, half-close at EOF; also read the stdin
	// stream until the server closes it, and then half-close our side too.
	if stdinStream != nil {
		var once sync.Once
		closeStdin := func() { _ = stdinStream.Close() }
		go func() {
			defer once.Do(closeStdin)
			if _, err := io.Copy(stdinStream, readerWrapper{os.Stdin}); err != nil {
				fmt.Fprintf(os.Stderr, "orbit-spdy-client: error copying stdin: %v\n", err)
			}
		}()
		go func() {
			defer once.Do(closeStdin)
			_, _ = io.Copy(io.Discard, stdinStream)
		}()
	}

	// copyStdout / copyStderr, waited for before the exit status is looked at.
	var wg sync.WaitGroup
	copyOut := func(dst io.Writer, src *spdystream.Stream, name string) {
		if src == nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _, _ = io.Copy(io.Discard, src) }()
			if _, err := io.Copy(dst, src); err != nil {
				fmt.Fprintf(os.Stderr, "orbit-spdy-client: error copying %s: %v\n", name, err)
			}
		}()
	}
	copyOut(os.Stdout, stdoutStream, "stdout")
	copyOut(os.Stderr, stderrStream, "stderr")
	wg.Wait()

	res := <-errorChan
	if res.err != nil && res.err != io.EOF {
		fmt.Fprintf(os.Stderr, "orbit-spdy-client: error reading from error stream: %v\n", res.err)
		return exitRemoteFail
	}
	if len(res.msg) == 0 {
		return 0
	}
	code, err := decodeStatusV4(res.msg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		return exitRemoteFail
	}
	return code
}

// decodeStatusV4 mirrors client-go's errorDecoderV4.decode. It returns the
// exit code for Success/NonZeroExitCode and an error otherwise.
func decodeStatusV4(message []byte) (int, error) {
	var st status
	if err := json.Unmarshal(message, &st); err != nil {
		return 0, fmt.Errorf("error stream protocol error: %v in %q", err, string(message))
	}
	switch st.Status {
	case "Success":
		return 0, nil
	case "Failure":
		if st.Reason == nonZeroExitCodeReason {
			if st.Details == nil {
				return 0, errors.New("error stream protocol error: details must be set")
			}
			for _, c := range st.Details.Causes {
				if c.Type != exitCodeCauseType {
					continue
				}
				rc, err := strconv.ParseUint(c.Message, 10, 8)
				if err != nil {
					return 0, fmt.Errorf("error stream protocol error: invalid exit code value %q", c.Message)
				}
				return int(rc), nil
			}
			return 0, fmt.Errorf("error stream protocol error: no %s cause given", exitCodeCauseType)
		}
		if st.Message == "" {
			return 0, fmt.Errorf("remote command failed (reason %q, no message)", st.Reason)
		}
		return 0, errors.New(st.Message)
	default:
		return 0, fmt.Errorf("error stream protocol error: unknown error (status %q in %q)", st.Status, string(message))
	}
}
