//! Helpers for the attestation-service tests: the service binaries, a minimal HTTP client
//! (TCP, or an agent's Unix socket), a webhook receiver, a proxy that can stop answering,
//! and a PostgreSQL server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A binary of another workspace package (`jek-agent`, `jek-verifier`,
/// `containerd-shim-jek-v2`), beside `jek`. `cargo test --workspace` builds them (their
/// packages have tests of their own).
pub fn bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_jek")).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build --workspace --bins` first)",
        path.display()
    );
    path
}

/// A running service; killed when dropped.
pub struct Service {
    pub child: Child,
    /// Its base URL, from the first line it prints.
    pub url: String,
    pub log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `program` with `args`; its stderr goes to `log`. Waits for its URL line.
    pub fn start(program: &Path, args: &[String], log: &Path) -> Service {
        let mut child = super::isolate(&mut Command::new(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http") || u.starts_with("unix:"))
            .unwrap_or_else(|| {
                panic!(
                    "{} did not start: {line:?}\n{}",
                    program.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .to_string();
        Service {
            child,
            url,
            log: log.to_path_buf(),
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }
}

/// The bearer tokens every test verifier accepts (`tokens_file`): an admin's and a
/// reader's. `http`, `get_json` and `post_json` present the admin's.
pub const ADMIN_TOKEN: &str = "jek-test-admin-token-0123456789abcdef0123456789";
/// See [`ADMIN_TOKEN`].
pub const READER_TOKEN: &str = "jek-test-reader-token-0123456789abcdef012345678";

/// Writes a `jek-attestation-verifier --tokens` file listing [`ADMIN_TOKEN`] (`test-admin`, admin) and
/// [`READER_TOKEN`] (`test-reader`, reader), mode 0600, and returns its path.
pub fn tokens_file(dir: &Path) -> PathBuf {
    use sha2::Digest as _;
    use std::os::unix::fs::PermissionsExt as _;
    let line = |role: &str, name: &str, token: &str| {
        format!(
            "{role} {name} sha256:{}\n",
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        )
    };
    let path = dir.join("verifier-tokens");
    let text = format!(
        "# test clients\n{}{}",
        line("admin", "test-admin", ADMIN_TOKEN),
        line("reader", "test-reader", READER_TOKEN)
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Writes `token` to `path` (mode 0600), for `jek ... --token-file`; returns the path as a
/// string.
pub fn token_file(path: &Path, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_string_lossy().into_owned()
}

/// An HTTP/1.1 exchange with `url` as the test admin: a verifier (plain HTTP) is sent
/// [`ADMIN_TOKEN`]; an agent's Unix socket (`unix:/path/agent.sock/v1/...`) is sent no
/// token (an agent takes none: it knows the test by its uid). Status and body.
pub fn http(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let token = (!url.starts_with("unix:")).then_some(ADMIN_TOKEN);
    http_as(token, method, url, body)
}

/// A stream to a test server: TCP or a Unix socket.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// Connects to `url`'s server: `http://HOST:PORT/PATH`, or `unix:SOCKET/v1/...`
    /// (the socket's path ends where the API's `/v1/` begins). Returns the stream, the
    /// Host header and the request path.
    pub fn connect(url: &str) -> std::io::Result<(Conn, String, String)> {
        if let Some(rest) = url.strip_prefix("unix:") {
            let (sock, path) = rest.find("/v1/").map_or((rest, "/".to_string()), |i| {
                (&rest[..i], rest[i..].to_string())
            });
            return Ok((
                Conn::Unix(UnixStream::connect(sock)?),
                "localhost".into(),
                path,
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .expect("plain http or unix: URL");
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        Ok((Conn::Tcp(TcpStream::connect(host)?), host.to_string(), path))
    }

    fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: std::net::Shutdown) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
        };
    }

    fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// An HTTP/1.1 exchange with `url` (plain HTTP, or `unix:` as [`Conn::connect`] reads it)
/// presenting `token` as a bearer token, or nothing: status and body.
pub fn http_as(
    token: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> (u16, Vec<u8>) {
    let (mut s, host, path) =
        Conn::connect(url).unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)));
    let body = body.unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP headers");
    let head = String::from_utf8_lossy(&resp[..text_end]).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut payload = resp[text_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    (status, payload)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// GET as JSON.
pub fn get_json(url: &str) -> (u16, Value) {
    let (status, body) = http("GET", url, None);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// POST JSON, answer as JSON.
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let (status, body) = http("POST", url, Some(body.to_string().as_bytes()));
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls `f` until it gives `Some`, or panics naming `what` after `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A webhook receiver: records every JSON body POSTed to it; the first `fail_first`
/// requests are answered 500 (to prove retries).
pub struct Webhook {
    pub url: String,
    pub received: Arc<Mutex<Vec<Value>>>,
    pub failed: Arc<AtomicUsize>,
}

impl Webhook {
    pub fn start(fail_first: usize) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let (rec, fail) = (received.clone(), failed.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let status = if fail.load(Ordering::SeqCst) < fail_first {
                    fail.fetch_add(1, Ordering::SeqCst);
                    "500 Internal Server Error"
                } else {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        rec.lock().unwrap().push(v);
                    }
                    "204 No Content"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Webhook {
            url,
            received,
            failed,
        }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

/// A proxy in front of `target` (`http://` or an agent's `unix:` socket), listening the
/// same way; once `hang` is set it accepts connections and never answers (an agent that
/// does not answer).
pub struct Proxy {
    pub url: String,
    hang: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<Conn>>>,
    /// Where a Unix proxy's socket is.
    _dir: Option<tempfile::TempDir>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        Proxy::rewriting(target, "", "")
    }

    /// A proxy that also replaces `from` with `to` (of the same length) in what clients
    /// send: a man in the middle who asks the target for another resource.
    pub fn rewriting(target: &str, from: &str, to: &str) -> Proxy {
        assert_eq!(from.len(), to.len(), "a rewrite keeps the length");
        let (from, to) = (from.as_bytes().to_vec(), to.as_bytes().to_vec());
        let (accept, url, dir): (Box<dyn Fn() -> Option<Conn> + Send>, String, _) =
            if target.starts_with("unix:") {
                let dir = tempfile::tempdir().unwrap();
                let sock = dir.path().join("proxy.sock");
                let listener = UnixListener::bind(&sock).unwrap();
                let accept = move || listener.accept().ok().map(|(c, _)| Conn::Unix(c));
                (
                    Box::new(accept),
                    format!("unix:{}", sock.display()),
                    Some(dir),
                )
            } else {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                let accept = move || listener.accept().ok().map(|(c, _)| Conn::Tcp(c));
                (Box::new(accept), url, None)
            };
        let target = format!("{}/v1/", target.trim_end_matches('/'));
        let hang = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (h, l) = (hang.clone(), live.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while let Some(client) = accept() {
                if h.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok((upstream, _, _)) = Conn::connect(&target) else {
                    continue;
                };
                l.lock().unwrap().push(client.try_clone().unwrap());
                let (mut c1, mut u1) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut c2, mut u2) = (client, upstream);
                let (from, to) = (from.clone(), to.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n @ 1..) = c1.read(&mut buf) {
                        let chunk = &mut buf[..n];
                        if !from.is_empty() {
                            let mut i = 0;
                            while i + from.len() <= chunk.len() {
                                if chunk[i..i + from.len()] == from[..] {
                                    chunk[i..i + from.len()].copy_from_slice(&to);
                                    i += from.len();
                                } else {
                                    i += 1;
                                }
                            }
                        }
                        if u1.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    u1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy {
            url,
            hang,
            live,
            _dir: dir,
        }
    }

    /// From now on, accepts and never answers; connections already open are cut.
    pub fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
        for c in self.live.lock().unwrap().drain(..) {
            c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A PostgreSQL server of Debian's postgresql package in a temporary directory, on a free
/// port; stopped when dropped. As root it runs as the `postgres` user (PostgreSQL refuses
/// root).
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_user: Option<String>,
}

fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{} (apt install postgresql): {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server (apt install postgresql)")
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let as_user = rustix::process::geteuid()
            .is_root()
            .then(|| "postgres".to_string());
        if as_user.is_some() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            dir,
            port,
            bin: pg_bin(),
            as_user,
        };
        let data = pg.dir.path().join("data");
        let out = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "jek", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.up();
        pg
    }

    /// Starts (or restarts) the server and waits until it answers.
    pub fn up(&self) {
        let data = self.dir.path().join("data");
        let out = self
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(self.dir.path().join("pg.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once (connections are cut).
    pub fn down(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }

    pub fn url(&self) -> String {
        format!("postgres://jek@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL with psql; its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "jek",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.down();
    }
}
