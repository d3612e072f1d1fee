//! A plain-HTTP proxy in front of a real registry that misbehaves on request: it answers
//! with an error status for a number of requests, demands a bearer token from its own token
//! endpoint (the docker token flow), cuts or stalls blob bodies after some bytes. It logs
//! every request line with its `Range` header. Test code only: the registry behind it is
//! the real one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the proxy does to the next requests.
#[derive(Default, Clone)]
pub struct Faults {
    /// Answer this status to the next `n` requests: `(status, n)`.
    pub status: Option<(u16, usize)>,
    /// Require `Authorization: Bearer <token>` obtained from `/token` with these
    /// basic credentials.
    pub bearer: Option<(String, String)>,
    /// Close every blob body after this many bytes.
    pub cut_blobs_after: Option<u64>,
    /// Stop sending every blob body after this many bytes until `stall_blobs_after` is
    /// cleared or the connections are dropped.
    pub stall_blobs_after: Option<u64>,
}

#[derive(Default)]
struct State {
    faults: Faults,
    backend: u16,
    log: Vec<String>,
    /// Bumped to make every stalled connection close.
    generation: u64,
}

/// The proxy; its listener thread ends with the test process.
pub struct FaultProxy {
    pub port: u16,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

const TOKEN: &str = "orbit-test-token";

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 in front of `127.0.0.1:backend`.
    pub fn start(backend: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new((
            Mutex::new(State {
                backend,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, port, &s);
                });
            }
        });
        FaultProxy { port, state, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the faults.
    pub fn set(&self, f: Faults) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().faults = f;
        cv.notify_all();
    }

    /// Closes every stalled connection (as when the server dies).
    pub fn drop_connections(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().generation += 1;
        cv.notify_all();
    }

    /// The request lines seen so far (`METHOD PATH [range]`).
    pub fn log(&self) -> Vec<String> {
        self.state.0.lock().unwrap().log.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.drop_connections();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn respond(conn: &mut TcpStream, status: u16, headers: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

/// One request per connection (every response says `Connection: close`).
fn serve(mut conn: TcpStream, port: u16, state: &(Mutex<State>, Condvar)) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let request_line = head[0].trim_end().to_string();
    let header = |name: &str| {
        head.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let (faults, backend, generation) = {
        let mut s = state.0.lock().unwrap();
        let range = header("range").unwrap_or_default();
        s.log
            .push(format!("{} {range}", request_line).trim().to_string());
        let f = s.faults.clone();
        if let Some((status, n)) = s.faults.status {
            s.faults.status = (n > 1).then_some((status, n - 1));
        }
        (f, s.backend, s.generation)
    };
    if let Some((status, _)) = faults.status {
        let body = match status {
            429 => "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"slow down\"}]}",
            404 => {
                "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}"
            }
            _ => "service unavailable",
        };
        return respond(&mut conn, status, "Retry-After: 0\r\n", body);
    }
    let mut forward_head: Vec<String> = head[1..head.len() - 1]
        .iter()
        .filter(|l| {
            let k = l.split(':').next().unwrap_or("").to_ascii_lowercase();
            k != "connection" && !(faults.bearer.is_some() && k == "authorization")
        })
        .cloned()
        .collect();
    if let Some((user, pass)) = &faults.bearer {
        use base64::Engine as _;
        if path.starts_with("/token") {
            let want = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            return if header("authorization") == Some(format!("Basic {want}")) {
                respond(
                    &mut conn,
                    200,
                    "",
                    &format!("{{\"token\":\"{TOKEN}\",\"access_token\":\"{TOKEN}\"}}"),
                )
            } else {
                respond(&mut conn, 401, "", "{\"details\":\"bad credentials\"}")
            };
        }
        if header("authorization") != Some(format!("Bearer {TOKEN}")) {
            return respond(
                &mut conn,
                401,
                &format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"orbit-test\"\r\n"
                ),
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
            );
        }
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", backend)) else {
        return respond(&mut conn, 502, "", "{\"errors\":[]}");
    };
    forward_head.push("Connection: close\r\n".into());
    write!(up, "{}\r\n{}\r\n", request_line, forward_head.concat())?;
    // The response head, with `Connection: close` made sure of.
    let mut up_reader = BufReader::new(up);
    let mut resp_head = String::new();
    loop {
        let mut line = String::new();
        if up_reader.read_line(&mut line)? == 0 {
            break;
        }
        if line == "\r\n" {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            resp_head.push_str(&line);
        }
    }
    resp_head.push_str("Connection: close\r\n\r\n");
    conn.write_all(resp_head.as_bytes())?;
    let is_blob = path.contains("/blobs/sha256:");
    let limit = if is_blob {
        faults.stall_blobs_after.or(faults.cut_blobs_after)
    } else {
        None
    };
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = up_reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let n_ok = match limit {
            Some(l) => (l.saturating_sub(sent) as usize).min(n),
            None => n,
        };
        conn.write_all(&buf[..n_ok])?;
        sent += n_ok as u64;
        if n_ok < n {
            conn.flush()?;
            if faults.stall_blobs_after.is_some() {
                // Stalled until the stall is lifted (then the rest flows) or the connections
                // are dropped (then this one closes).
                let (m, cv) = state;
                let mut s = m.lock().unwrap();
                while s.faults.stall_blobs_after.is_some() && s.generation == generation {
                    s = cv.wait_timeout(s, Duration::from_secs(1)).unwrap().0;
                }
                if s.generation != generation {
                    break;
                }
                drop(s);
                conn.write_all(&buf[n_ok..n])?;
                std::io::copy(&mut up_reader, &mut conn)?;
            }
            break;
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}
