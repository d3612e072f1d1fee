// orbit-spdy-client — a test-only SPDY/3.1 client for orbit's CRI streaming
// server (the URLs returned by the Exec / Attach / PortForward CRI calls).
//
// Why it exists: the real clients of that server are kubectl/crictl (via the
// kubelet), and neither is packaged on the machines this project is built and
// tested on. This small program mirrors exactly what they do on the wire, so
// the tests drive orbit's server with the same SPDY implementation Kubernetes
// uses:
//
//   - SPDY framing comes from github.com/moby/spdystream (Debian package
//     golang-github-docker-spdystream-dev), the library wrapped by
//     k8s.io/apimachinery/pkg/util/httpstream/spdy. Nothing SPDY-level is
//     re-implemented here.
//   - The upgrade handshake mirrors apimachinery's SpdyRoundTripper
//     (POST + "Connection: Upgrade" + "Upgrade: SPDY/3.1" +
//     X-Stream-Protocol-Version lines, expect 101).
//   - exec/attach mirror k8s.io/client-go/tools/remotecommand, protocol
//     v4.channel.k8s.io (streams error, stdin, stdout, stderr, resize; the
//     error stream carries a JSON metav1.Status).
//   - portforward mirrors k8s.io/client-go/tools/portforward
//     (portforward.k8s.io; one error+data stream pair per connection, with
//     headers streamType/port/requestID).
//   - Like client-go it pings the server every 5s (--ping-period), closes a
//     session by sending RST_STREAM(CANCEL) for every stream it has not
//     half-closed itself and then GOAWAY.
//
// Only the Go standard library and spdystream are used. Build it with
// build.sh next to this file (offline, GOPATH mode against the Debian
// sources). Set DEBUG=1 to make spdystream log every frame it handles.
//
// Usage:
//
//	orbit-spdy-client exec   URL [--stdin] [--stdout] [--stderr] [--tty] [--resize=WxH] [--ping-period=DUR]
//	orbit-spdy-client attach URL [same flags as exec]
//	orbit-spdy-client portforward URL PORT [--listen=HOST:LPORT] [--keep-going] [--ping-period=DUR]
//	orbit-spdy-client ws-exec URL [--stdin] [--stdout] [--stderr] [--tty] [--resize=WxH] [--protocol=P]
//	orbit-spdy-client ws-attach URL [same flags as ws-exec]
//
// ws-exec / ws-attach use the websocket transport instead (websocket.go,
// github.com/gorilla/websocket; v5.channel.k8s.io … channel.k8s.io, or only
// --protocol). Exit statuses as for exec.
//
// URL is http:// (or https://, certificate not verified — test use only).
//
// Exit status:
//
//	exec/attach: 0 on Success status (or an empty error stream, as client-go);
//	             N when the server reports NonZeroExitCode with ExitCode cause N;
//	             125 for any other failure reported on the error stream or a
//	             protocol error while streaming (message on stderr);
//	             126 when the session could not be set up (connect error,
//	             non-101 answer, wrong negotiated protocol, stream not replied).
//	portforward: 0 when done; 1 if the server wrote anything on an error
//	             stream (printed to stderr) or the connection was lost;
//	             126 when the session could not be set up.
//	2 for usage errors.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	exitUsage        = 2
	exitRemoteFail   = 125
	exitSetupFail    = 126
	defaultPingEvery = 5 * time.Second // client-go transport/spdy RoundTripperFor
)

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  orbit-spdy-client exec   URL [--stdin] [--stdout] [--stderr] [--tty] [--resize=WxH] [--ping-period=DUR]
  orbit-spdy-client attach URL [--stdin] [--stdout] [--stderr] [--tty] [--resize=WxH] [--ping-period=DUR]
  orbit-spdy-client portforward URL PORT [--listen=HOST:LPORT] [--keep-going] [--ping-period=DUR]
  orbit-spdy-client ws-exec URL [--stdin] [--stdout] [--stderr] [--tty] [--resize=WxH] [--protocol=P]
  orbit-spdy-client ws-attach URL [same flags as ws-exec]
`)
	os.Exit(exitUsage)
}

func fatalUsage(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "orbit-spdy-client: "+format+"\n", args...)
	usage()
}

// parsedArgs holds positional arguments and --flags (accepted anywhere on the
// command line, as --name, --name=value, --name value or -name...).
type parsedArgs struct {
	positional []string
	bools      map[string]bool
	values     map[string]string
}

func parseArgs(args []string, boolFlags, valueFlags []string) parsedArgs {
	isBool := map[string]bool{}
	for _, f := range boolFlags {
		isBool[f] = true
	}
	isValue := map[string]bool{}
	for _, f := range valueFlags {
		isValue[f] = true
	}
	p := parsedArgs{bools: map[string]bool{}, values: map[string]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.positional = append(p.positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			p.positional = append(p.positional, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if eq := strings.IndexByte(name, '='); eq >= 0 {
			name, value, hasValue = name[:eq], name[eq+1:], true
		}
		switch {
		case isBool[name]:
			if !hasValue {
				p.bools[name] = true
				continue
			}
			b, err := strconv.ParseBool(value)
			if err != nil {
				fatalUsage("invalid value %q for --%s", value, name)
			}
			p.bools[name] = b
		case isValue[name]:
			if !hasValue {
				if i+1 >= len(args) {
					fatalUsage("--%s needs a value", name)
				}
				i++
				value = args[i]
			}
			p.values[name] = value
		default:
			fatalUsage("unknown flag %q", a)
		}
	}
	return p
}

func parsePingPeriod(p parsedArgs) time.Duration {
	v, ok := p.values["ping-period"]
	if !ok {
		return defaultPingEvery
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		fatalUsage("invalid --ping-period %q (want a Go duration such as 5s, 0 disables pings)", v)
	}
	return d
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, rest := os.Args[1], os.Args[2:]
	switch cmd {
	case "exec", "attach":
		p := parseArgs(rest, []string{"stdin", "stdout", "stderr", "tty"}, []string{"resize", "ping-period"})
		opts := commandOptions(cmd, p)
		os.Exit(runRemoteCommand(p.positional[0], opts, parsePingPeriod(p)))
	case "ws-exec", "ws-attach":
		p := parseArgs(rest, []string{"stdin", "stdout", "stderr", "tty"}, []string{"resize", "protocol"})
		opts := commandOptions(cmd, p)
		offer := wsProtocols
		if v, ok := p.values["protocol"]; ok {
			offer = []string{v}
		}
		os.Exit(runWebsocketCommand(p.positional[0], opts, offer))
	case "portforward", "port-forward":
		p := parseArgs(rest, []string{"keep-going"}, []string{"listen", "ping-period"})
		if len(p.positional) != 2 {
			fatalUsage("portforward needs URL and PORT")
		}
		port, err := strconv.ParseUint(p.positional[1], 10, 16)
		if err != nil || port == 0 {
			fatalUsage("invalid remote port %q", p.positional[1])
		}
		listen, hasListen := p.values["listen"]
		if hasListen && listen == "" {
			fatalUsage("--listen needs HOST:PORT")
		}
		os.Exit(runPortForward(p.positional[0], uint16(port), listen, p.bools["keep-going"], parsePingPeriod(p)))
	case "-h", "--help", "help":
		usage()
	default:
		fatalUsage("unknown subcommand %q", cmd)
	}
}

// commandOptions: the URL check and stream options of exec/attach, over either
// transport (--stdin --stdout --stderr --tty --resize=WxH).
func commandOptions(cmd string, p parsedArgs) streamOptions {
	if len(p.positional) != 1 {
		fatalUsage("%s needs exactly one URL", cmd)
	}
	opts := streamOptions{
		stdin:  p.bools["stdin"],
		stdout: p.bools["stdout"],
		stderr: p.bools["stderr"],
		tty:    p.bools["tty"],
	}
	if r, ok := p.values["resize"]; ok {
		w, h, err := parseSize(r)
		if err != nil {
			fatalUsage("invalid --resize %q: %v", r, err)
		}
		if !opts.tty {
			fatalUsage("--resize needs --tty (client-go only opens the resize stream for a tty)")
		}
		opts.resize = &terminalSize{Width: w, Height: h}
	}
	return opts
}

func parseSize(s string) (uint16, uint16, error) {
	parts := strings.Split(strings.ToLower(s), "x")
	if len(parts) != 2 {
		return 0, 0, fmt.Errorf("want WIDTHxHEIGHT")
	}
	w, err := strconv.ParseUint(parts[0], 10, 16)
	if err != nil {
		return 0, 0, err
	}
	h, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil {
		return 0, 0, err
	}
	return uint16(w), uint16(h), nil
}
