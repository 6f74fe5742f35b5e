//! Helpers shared by the end-to-end tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod service;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `jek` binary under test, with the state directories of the test that calls it
/// ([`isolate`]). `JEK_EMULATED_KVM=true`: the KVM tests boot test kernels, which a
/// software KVM (these machines, see FACTS.md) runs; the refusal without hardware
/// virtualization has its own test (tests/boot.rs).
pub fn jek() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jek"));
    c.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("JEK_LOG")
        .env_remove("JEK_TPM_CA")
        .env("JEK_EMULATED_KVM", "true");
    isolate(&mut c);
    c
}

thread_local! {
    /// The state home of the test running on this thread, made at its first use.
    static TEST_HOME: std::cell::OnceCell<tempfile::TempDir> = const { std::cell::OnceCell::new() };
}

/// The state home of the test that runs on this thread: a temporary directory of its own,
/// removed when the test ends (libtest runs each test on a thread named after it, and this
/// thread's locals are dropped with it). Nothing a test runs writes to the user's
/// `~/.local/share/jek` or `~/.cache/jek`, and no two tests (or two runs of the suite at
/// once) share a registration store, a local TPM CA or an image cache. A thread that a test
/// spawns has no home: build its `Command` on the test's thread and move it there.
pub fn test_home() -> PathBuf {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => {}
        other => panic!(
            "tests/common: a command with a test's state was made on thread {other:?}, not on \
             the test's own thread; build the Command there and move it into the thread"
        ),
    }
    TEST_HOME.with(|home| {
        home.get_or_init(|| {
            tempfile::Builder::new()
                .prefix("jek-test-home.")
                .tempdir()
                .unwrap()
        })
        .path()
        .to_path_buf()
    })
}

/// Points a command's per-user state at [`test_home`]: `XDG_DATA_HOME` (jek's registration
/// store and local TPM CA), `XDG_CACHE_HOME` (the image cache; kernel builds name their
/// cache explicitly) and `XDG_STATE_HOME`. For `jek`, the service binaries and the
/// containerd that starts the shim.
pub fn isolate(c: &mut Command) -> &mut Command {
    let home = test_home();
    c.env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_STATE_HOME", home.join("state"))
}

/// Runs `jek` with `args` in `dir` and returns its output.
pub fn run_jek(dir: &Path, args: &[&str]) -> Output {
    jek().current_dir(dir).args(args).output().expect("run jek")
}

/// Asserts an exit code, showing stdout and stderr when it differs.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub use jek_builder::kernel_image::synthetic_bzimage as fake_bzimage;

/// A temporary directory with a key pair `dev.key`/`dev.pub` and sample components.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace { dir };
        ws.write("bzImage", &fake_bzimage("6.1.192-jek"));
        ws.write("initrd.cpio", b"070701 pretend this is a cpio archive");
        ws.write(
            "kernel.config",
            b"CONFIG_64BIT=y\n# CONFIG_MODULES is not set\n",
        );
        ws.keygen("dev");
        ws
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.path(name), data).unwrap();
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    pub fn jek(&self, args: &[&str]) -> Output {
        run_jek(self.dir.path(), args)
    }

    /// Runs jek in the workspace with `COSIGN_PASSWORD` set to `password`.
    pub fn jek_cosign(&self, password: &str, args: &[&str]) -> Output {
        let mut c = jek();
        c.current_dir(self.dir.path())
            .args(args)
            .env("COSIGN_PASSWORD", password);
        c.output().expect("run jek")
    }

    /// `jek keygen --out NAME`; returns the key ID it prints.
    pub fn keygen(&self, name: &str) -> String {
        let out = self.jek(&["keygen", "--out", name]);
        assert_exit(&out, 0);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `jek pack` of the sample components as OUT, signed by each key in `keys`.
    pub fn pack(&self, out: &str, security_version: u64, keys: &[&str]) -> Output {
        self.pack_command(out, security_version, keys)
            .output()
            .expect("run jek")
    }

    /// The `jek pack` command of [`Workspace::pack`], to add environment variables to.
    pub fn pack_command(&self, out: &str, security_version: u64, keys: &[&str]) -> Command {
        let sv = security_version.to_string();
        let mut args = vec![
            "pack",
            "--kernel",
            "bzImage",
            "--initramfs",
            "initrd.cpio",
            "--cmdline",
            "console=ttyS0 quiet",
            "--config",
            "kernel.config",
            "--name",
            "demo",
            "--version",
            "1.0.0",
            "--security-version",
            &sv,
            "--out",
            out,
        ];
        for k in keys {
            args.push("--key");
            args.push(k);
        }
        let mut c = jek();
        c.current_dir(self.dir.path()).args(&args);
        c
    }

    /// Writes a policy file.
    pub fn policy(&self, name: &str, yaml: &str) {
        self.write(name, yaml.as_bytes());
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The kernel cache the tests share (kept across runs on the same machine).
pub fn test_cache_dir() -> PathBuf {
    repo_root().join("target").join("jek-test-cache")
}

/// A signing key for tests that build, created once per test process in the test cache.
pub fn test_key() -> PathBuf {
    static KEY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let dir = test_cache_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("test.key");
        if !(key.exists() && dir.join("test.pub").exists()) {
            let out = jek()
                .args(["keygen", "--force", "--out"])
                .arg(dir.join("test"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        key
    })
    .clone()
}

/// `jek build RECIPE` with the test key and cache, at a fixed SOURCE_DATE_EPOCH.
pub fn build(recipe: &Path, out: &Path, extra: &[&str]) -> Output {
    jek()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .arg(recipe)
        .arg("--key")
        .arg(test_key())
        .arg("--cache-dir")
        .arg(test_cache_dir())
        .arg("--out-dir")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// `jek build RECIPE --json` into `out`; asserts success and returns the JSON report.
pub fn build_json(recipe: &Path, out: &Path) -> serde_json::Value {
    let output = build(recipe, out, &["--json"]);
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The default recipe's build output.
pub struct Built {
    /// Keeps the output directory alive.
    pub dir: tempfile::TempDir,
    /// The bundle.
    pub bundle: PathBuf,
    /// `jek build --json`.
    pub json: serde_json::Value,
}

/// The default recipe, built once per test process (the kernel comes from the shared cache).
pub fn default_build() -> &'static Built {
    static BUILT: std::sync::OnceLock<Built> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        build_guest();
        let dir = tempfile::tempdir().unwrap();
        let json = build_json(&repo_root().join("recipes/default.yaml"), dir.path());
        let bundle = PathBuf::from(json["bundle"].as_str().unwrap());
        Built { dir, bundle, json }
    })
}

/// Builds the static guest binaries (idempotent; cargo does nothing the second time).
pub fn build_guest() {
    let out = Command::new("bash")
        .arg(repo_root().join("ci/build-guest.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ci/build-guest.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a QEMU boot printed on the serial console.
pub struct Boot {
    pub console: String,
    pub timed_out: bool,
}

impl Boot {
    /// The JSON of the first console line with this tag (`JEK-READY` ...).
    pub fn tagged(&self, tag: &str) -> Option<serde_json::Value> {
        self.console
            .lines()
            .find_map(|l| {
                l.trim_end_matches('\r')
                    .strip_prefix(&format!("{tag} "))
                    .map(str::to_string)
            })
            .and_then(|j| serde_json::from_str(&j).ok())
    }
}

/// QEMU's options for a TCG guest on `machine`. `-M microvm` also gets a clock that counts
/// instructions (`-icount shift=auto,sleep=on`): its ACPI is hardware-reduced, so Linux has no
/// PIT tick, no HPET and no PM timer there, and its one chance to learn the TSC frequency is
/// an early 50 ms poll of the PIT that fails when the host preempts QEMU; the kernel then
/// waits forever in `calibrate_delay` (docs/design.md, "Clock calibration"). With the
/// instruction clock the poll sees no jitter. `-M pc` keeps real time: its HPET and PM timer
/// rescue a failed poll.
pub fn qemu_machine_args(machine: &str) -> Vec<&str> {
    let mut args = vec!["-M", machine];
    if machine.split(',').next() == Some("microvm") {
        args.extend(["-icount", "shift=auto,sleep=on"]);
    }
    args
}

/// Boots a kernel and initramfs under QEMU with TCG (no KVM: see shared FACTS) and returns
/// the console once QEMU exits or `timeout_s` passes.
pub fn boot_qemu(
    machine: &str,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    timeout_s: u64,
) -> Boot {
    use std::io::Read as _;
    let mut child = Command::new("qemu-system-x86_64")
        .args(qemu_machine_args(machine))
        .args([
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 must be installed (ci/install-deps.sh installs it)");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
    let mut timed_out = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Boot {
        console: reader.join().unwrap(),
        timed_out,
    }
}

/// A pod file (Kubernetes Pod subset) named `name`: one container running the sample app
/// with exit code 0 and `POD=<name>` in its environment.
pub fn pod_yaml(name: &str) -> String {
    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n    - name: app\n      command: [/bin/jek-sample-app]\n      args: [--exit-code, \"0\"]\n      env: [{name: POD, value: NAME}]\n";
    POD.replace("NAME", name)
}

/// The swtpm a run record (`pod.json`) says was kept, if any.
pub fn kept_swtpm(record: &serde_json::Value) -> Option<jek_tpm::swtpm::KeptSwtpm> {
    let record: jek_loader::RunRecord = serde_json::from_value(record.clone()).ok()?;
    record.tpm.kept.map(|k| k.swtpm())
}

/// A connection to the kept swtpm of a run record, as its owner.
pub fn connect_kept(record: &serde_json::Value) -> jek_tpm::Tpm {
    let kept = kept_swtpm(record).expect("the run record names a kept TPM");
    jek_tpm::Tpm::connect_swtpm(&kept.sockets).unwrap()
}

/// Runs `jek args` in `dir` under GNU time (`/usr/bin/time`, package `time`): its output
/// and its peak resident set size in KiB, as the kernel accounted it for that process.
pub fn jek_peak_rss(dir: &Path, args: &[&str]) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let inner = jek();
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(report.path());
    c.arg(inner.get_program()).args(args).current_dir(dir);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c
        .output()
        .expect("run jek under /usr/bin/time (apt install time)");
    let text = std::fs::read_to_string(report.path()).unwrap();
    // GNU time prefixes "Command exited with non-zero status N" on its own line.
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {text:?}"));
    (out, kib)
}

/// A `docker-registry` on 127.0.0.1 with its storage in a temporary directory; stopped
/// when dropped.
pub struct RegistryProcess {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its storage directory.
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's `docker-registry` (or `$JEK_DOCKER_REGISTRY`).
pub fn start_registry() -> RegistryProcess {
    start_registry_with(|_| String::new(), "")
}

/// Starts a registry whose config gets `top` (YAML made from its temporary directory:
/// `auth:`, say) and `http` (lines under `http:`, indented two spaces: `tls:`).
pub fn start_registry_with(top: impl Fn(&Path) -> String, http: &str) -> RegistryProcess {
    let bin = std::env::var("JEK_DOCKER_REGISTRY").unwrap_or_else(|_| "docker-registry".into());
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = dir.path().join("storage");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n{}http:\n  addr: 127.0.0.1:{port}\n{http}",
            storage.display(),
            top(dir.path()),
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (apt install docker-registry): {e}"));
    let addr = format!("127.0.0.1:{port}");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "registry did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    RegistryProcess {
        child,
        addr,
        storage,
        _dir: dir,
    }
}

/// Runs openssl in the workspace; panics with its stderr if it fails.
fn openssl(ws: &Workspace, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(ws.dir.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 CA, `NAME.pem` and `NAME.key`, valid two days.
pub fn test_ca(ws: &Workspace, name: &str, subject: &str) {
    openssl(
        ws,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            subject,
        ],
    );
}

/// A P-256 certificate `NAME.pem` with its key `NAME.key` (mode 0600) for `subject`, issued
/// by the CA `CA.pem`/`CA.key`, with the extensions in `ext` (openssl's `-extfile` text).
pub fn issue_cert(ws: &Workspace, name: &str, subject: &str, ca: &str, ext: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let (key, csr, pem, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    openssl(
        ws,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    );
    std::fs::set_permissions(ws.path(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
    ws.write(&extfile, ext.as_bytes());
    openssl(
        ws,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ],
    );
}

/// The test PKI, with openssl: a CA (`ca.pem`), a server certificate for 127.0.0.1
/// (`server.pem`, `server.key`), and client certificates in the Kubernetes manner (CN the
/// client's name, O its role): `admin` (`O=jek:admin`), `reader` (`O=jek:reader`),
/// `verifier` (`O=jek:verifier`), `norole` (no jek role); and `stranger`, a client
/// certificate naming `O=jek:admin` from another CA (`other-ca.pem`).
pub fn tls_files(ws: &Workspace) {
    test_ca(ws, "ca", "/CN=jek test CA");
    issue_cert(
        ws,
        "server",
        "/CN=127.0.0.1",
        "ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    let client = "extendedKeyUsage=clientAuth\n";
    issue_cert(ws, "admin", "/CN=test-admin-cert/O=jek:admin", "ca", client);
    issue_cert(
        ws,
        "reader",
        "/CN=test-reader-cert/O=jek:reader",
        "ca",
        client,
    );
    issue_cert(
        ws,
        "verifier",
        "/CN=test-verifier/O=jek:verifier",
        "ca",
        client,
    );
    issue_cert(ws, "norole", "/CN=someone/O=example", "ca", client);
    test_ca(ws, "other-ca", "/CN=another CA");
    issue_cert(
        ws,
        "stranger",
        "/CN=test-admin-cert/O=jek:admin",
        "other-ca",
        client,
    );
}

/// Whether process `pid` is gone (or a zombie nobody reaped: it runs no more) within
/// `secs` seconds.
pub fn gone_within(pid: u32, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if stat.is_empty() || zombie {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The processes whose command line (arguments joined by spaces) names `needle` (QEMU and
/// swtpm name the run directory), zombies excepted.
pub fn processes_naming(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if !zombie
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
            && pid != std::process::id()
        {
            out.push(pid);
        }
    }
    out
}

/// What a failed test left running under `dir` (a pod's QEMU, a kept swtpm): killed, and
/// each swtpm's private socket directory (`/tmp/jek-tpm-*`, named in its arguments)
/// removed. A passing test leaves nothing; this keeps a failing one from leaving daemons.
pub fn kill_left_behind(dir: &Path) {
    for pid in processes_naming(&dir.display().to_string()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        for arg in String::from_utf8_lossy(&cmdline).split(['\0', ',']) {
            if let Some(sock) = arg.strip_prefix("path=") {
                if let Some(d) = Path::new(sock).parent() {
                    if d.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("jek-tpm-"))
                    {
                        let _ = std::fs::remove_dir_all(d);
                    }
                }
            }
        }
    }
}
