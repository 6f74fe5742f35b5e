//! Running a container as a container runtime would: its root at /run/containers/NAME
//! (unpacked by the kernel from the container segment) with /proc, /sys, a small /dev and a
//! /tmp tmpfs, then chroot, working directory, groups, group and user, then exec. Each line
//! the container writes is passed on prefixed with its name, so no container can write a
//! line the loader would take for the init's protocol.
//!
//! The chroot and the identity change happen in a child that is the init binary itself
//! (`/proc/self/exe --jek-exec ...`), so no `unsafe` pre-exec hook is needed.

use std::io::{Read, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use jek_pod::agent::Stream;
use jek_pod::image::{self, ContainerImage, Process};
use jek_pod::spec::Container;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// The argument that makes the init the exec helper.
pub const EXEC_ARG: &str = "--jek-exec";

/// The longest piece of a container's output passed on as one line.
const MAX_PIECE: usize = 3072;

/// A running container: its process and the pumps of its stdout and stderr.
pub struct Running {
    /// The container's name.
    pub name: String,
    /// Its process.
    pub child: Child,
    /// One message per pump when it reached end of file.
    pub done: mpsc::Receiver<()>,
}

/// Why a container did not start.
pub type StartError = String;

fn mount_point(root: &Path, name: &str) -> Result<PathBuf, StartError> {
    let p = root.join(name);
    match std::fs::symlink_metadata(&p) {
        // A symbolic link here would take the mount outside the container's root.
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => Err(format!(
            "/{name} in the image is not a directory; it cannot be a mount point"
        )),
        Ok(_) => Ok(p),
        Err(_) => {
            std::fs::create_dir(&p).map_err(|e| format!("create /{name}: {e}"))?;
            Ok(p)
        }
    }
}

fn mount_in(
    root: &Path,
    name: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<PathBuf, StartError> {
    let target = mount_point(root, name)?;
    mount(Some(fstype), &target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on /{name}: {e}"))?;
    Ok(target)
}

/// /proc, /sys, a /dev with the usual character devices, and /tmp.
fn prepare_root(root: &Path) -> Result<(), StartError> {
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_in(root, "proc", "proc", hidden, None)?;
    mount_in(root, "sys", "sysfs", hidden | MsFlags::MS_RDONLY, None)?;
    let dev = mount_in(
        root,
        "dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknod(
            &dev.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| format!("create /dev/{name}: {e}"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| format!("create /dev/{name}: {e}"))?;
    }
    mount_in(
        root,
        "tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    Ok(())
}

/// Sends a piece of a container's output (its name, the stream) over the agent channel.
pub type SendOutput = std::sync::Arc<dyn Fn(&str, Stream, &[u8]) + Send + Sync>;

/// Where a container's output goes.
#[derive(Clone)]
pub enum OutputSink {
    /// The serial console, line by line, prefixed with `[name] ` (a pod that is no
    /// sandbox).
    Console,
    /// The agent channel: each piece as read, with its stream (a pod sandbox).
    Channel(SendOutput),
}

/// Passes `from` on as `sink` says.
fn pump(
    name: String,
    from: impl Read + Send + 'static,
    stream: Stream,
    sink: &OutputSink,
    done: mpsc::Sender<()>,
) {
    match sink {
        OutputSink::Console => pump_lines(name, from, done),
        OutputSink::Channel(send) => {
            let send = std::sync::Arc::clone(send);
            let mut from = from;
            std::thread::spawn(move || {
                let mut chunk = vec![0u8; 16 * 1024];
                loop {
                    match from.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => send(&name, stream, &chunk[..n]),
                    }
                }
                let _ = done.send(());
            });
        }
    }
}

/// Passes `from` on to the console, line by line, prefixed with `[name] `.
fn pump_lines(name: String, mut from: impl Read + Send + 'static, done: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let mut buf: Vec<u8> = Vec::with_capacity(MAX_PIECE);
        let mut chunk = [0u8; 4096];
        let emit = |piece: &[u8]| {
            let text = String::from_utf8_lossy(piece);
            let line = format!("[{name}] {}\n", text.trim_end_matches(['\r', '\n']));
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        };
        loop {
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &chunk[..n] {
                buf.push(b);
                if b == b'\n' || buf.len() >= MAX_PIECE {
                    emit(&buf);
                    buf.clear();
                }
            }
        }
        if !buf.is_empty() {
            emit(&buf);
        }
        let _ = done.send(());
    });
}

/// The record of container `name`.
fn record(name: &str) -> Result<ContainerImage, StartError> {
    let path = image::record_path(name);
    let bytes = std::fs::read(&path).map_err(|e| format!("read {path}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parse {path}: {e}"))
}

/// Starts container `c`: with an image, in its own root; without, as a program of the
/// init's root file system. Its output goes to `sink`.
pub fn start(c: &Container, sink: &OutputSink) -> Result<Running, StartError> {
    let (mut cmd, process) = match &c.image {
        Some(_) => {
            let rec = record(&c.name)?;
            let root = PathBuf::from(image::root_path(&c.name));
            let read = |p: &str| std::fs::read_to_string(root.join(p.trim_start_matches('/'))).ok();
            let process = image::resolve(c, Some(&rec.config), &read).map_err(|e| e.to_string())?;
            prepare_root(&root)?;
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg(EXEC_ARG)
                .arg(&root)
                .arg(&process.cwd)
                .arg(process.uid.to_string())
                .arg(process.gid.to_string())
                .arg("--")
                .args(&process.argv);
            (cmd, process)
        }
        None => {
            let read = |p: &str| std::fs::read_to_string(p).ok();
            let process = image::resolve(c, None, &read).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(&process.argv[0]);
            cmd.args(&process.argv[1..]).current_dir(&process.cwd);
            (cmd, process)
        }
    };
    let Process { env, .. } = process;
    cmd.env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        pump(c.name.clone(), out, Stream::Stdout, sink, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(c.name.clone(), err, Stream::Stderr, sink, tx);
    }
    Ok(Running {
        name: c.name.clone(),
        child,
        done: rx,
    })
}

/// The exec helper: `--jek-exec ROOT CWD UID GID -- ARGV...`. Never returns.
pub fn exec_helper(args: &[String]) -> ! {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        let _ = writeln!(std::io::stderr(), "jek-init: {what}: {e}");
        std::process::exit(127)
    };
    let (root, cwd, uid, gid, argv) = match args {
        [root, cwd, uid, gid, sep, argv @ ..] if sep == "--" && !argv.is_empty() => {
            (root, cwd, uid, gid, argv)
        }
        _ => fail("exec helper", &"bad arguments"),
    };
    let uid: u32 = uid.parse().unwrap_or_else(|e| fail("uid", &e));
    let gid: u32 = gid.parse().unwrap_or_else(|e| fail("gid", &e));
    if let Err(e) = std::os::unix::fs::chroot(root) {
        fail(&format!("chroot {root}"), &e);
    }
    if let Err(e) = std::env::set_current_dir("/") {
        fail("chdir /", &e);
    }
    // Inside the root now: a working directory the image lacks is made, as runtimes do.
    let _ = std::fs::create_dir_all(cwd);
    if let Err(e) = std::env::set_current_dir(cwd) {
        fail(&format!("working directory {cwd}"), &e);
    }
    let (g, u) = (
        nix::unistd::Gid::from_raw(gid),
        nix::unistd::Uid::from_raw(uid),
    );
    if let Err(e) = nix::unistd::setgroups(&[g]) {
        fail("setgroups", &e);
    }
    if let Err(e) = nix::unistd::setgid(g) {
        fail("setgid", &e);
    }
    if let Err(e) = nix::unistd::setuid(u) {
        fail("setuid", &e);
    }
    let e = Command::new(&argv[0]).args(&argv[1..]).exec();
    fail(&format!("cannot run {}", argv[0]), &e)
}
