//! `jek-sample-app`: the default recipe's application. Prints what it was given and its
//! host name, checks that 127.0.0.1 answers, and exits with the status named by `--exit-code N` (default 0),
//! so tests can see that arguments, environment and the exit status travel end to end.
//! `--sleep-ms N` keeps it running N milliseconds after it printed its line; `--stderr TEXT`
//! also writes TEXT and a newline to standard error.
#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut exit = 0;
    let mut sleep_ms = 0u64;
    let mut stderr = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--exit-code" {
            exit = it.next().and_then(|v| v.parse().ok()).unwrap_or(2);
        } else if a == "--sleep-ms" {
            sleep_ms = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if a == "--stderr" {
            stderr = it.next();
        }
    }
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
    let loopback = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| {
            let mut c = std::net::TcpStream::connect(l.local_addr()?)?;
            let (mut s, _) = l.accept()?;
            c.write_all(b"ping")?;
            let mut b = [0u8; 4];
            s.read_exact(&mut b)?;
            Ok(b == *b"ping")
        })
        .unwrap_or(false);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    println!(
        "jek-sample-app: {greeting} from pid {} args={args:?} loopback={} host={}",
        std::process::id(),
        if loopback { "ok" } else { "FAILED" },
        host.trim()
    );
    if let Some(text) = stderr {
        eprintln!("{text}");
    }
    // A pod that keeps running, for tests that stop it from the host.
    std::thread::sleep(std::time::Duration::from_millis(sleep_ms));
    std::process::exit(if loopback { exit } else { 3 });
}
