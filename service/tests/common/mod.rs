//! Shared helpers: a coordinator server in another process, killed and
//! restarted at will. The child is this test binary itself, started on its
//! `server_process` test with the serve flags in an environment variable: it
//! runs the code `chronos-sync coordinator serve` runs (the CLI member's
//! binary is not built by `cargo test -p chronos-sync-service`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chronos_sync_service::{ClientConfig, RemoteCoordinator};

/// Set in a server child: the serve flags, separated by U+001F.
pub const CHILD_ENV: &str = "CHRONOS_TEST_SERVER_FLAGS";

#[derive(clap::Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: chronos_sync_service::cli::ServeArgs,
}

/// In a server child (see [`CHILD_ENV`]): serve until killed, then exit.
/// Otherwise nothing. Every test file using [`ServerProc`] calls it from a
/// test named `server_process`.
pub fn serve_if_child() {
    use clap::Parser;
    let Ok(flags) = std::env::var(CHILD_ENV) else { return };
    // The parent holds our stdin open; when it goes away (even SIGKILLed),
    // stdin reaches end of file and this server exits: no orphans.
    // (Unless the test checks the server's own `--exit-on-stdin-eof`.)
    if std::env::var_os("CHRONOS_TEST_NO_STDIN_WATCH").is_none() {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
    let argv = std::iter::once("serve".to_owned()).chain(flags.split('\u{1f}').map(str::to_owned));
    let code = match ServeCli::try_parse_from(argv) {
        Ok(cli) => match cli.serve.run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("{e}");
            2
        }
    };
    std::process::exit(code);
}

/// A fresh, empty directory under the system temp dir (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!(
            "chronos-svc-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server process.
pub struct ServerProc {
    child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
}

fn spawn(dir: &Path, listen: &str, args: &[String], envs: &[(String, String)]) -> Result<(Child, String), String> {
    let mut flags: Vec<String> =
        vec!["--data".into(), dir.to_str().expect("utf-8 path").into(), "--listen".into(), listen.into()];
    flags.extend(args.iter().cloned());
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["server_process", "--exact", "--nocapture", "--test-threads", "1"]).env(CHILD_ENV, flags.join("\u{1f}"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("listening on ") {
                let _ = tx.send(line[at..].to_owned());
                break;
            }
        }
        for _ in lines {}
    });
    // Generous: the machine may be loaded.
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("server did not start: {e}"));
        }
    };
    match line.strip_prefix("listening on ") {
        Some(a) => Ok((child, a.to_owned())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("unexpected server output {line:?}"))
        }
    }
}

impl ServerProc {
    /// Starts a server on `dir` at a free loopback port.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_env(dir, args, &[])
    }

    pub fn start_env(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, addr) = spawn(dir, "127.0.0.1:0", &args, &envs).expect("start the server");
        ServerProc { child: Some(child), addr, dir: dir.to_owned(), args, envs }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same directory and port (retrying the bind while
    /// the port is still held).
    pub fn restart(&mut self) {
        self.kill();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            match spawn(&self.dir, &self.addr, &self.args, &self.envs) {
                Ok((child, addr)) => {
                    assert_eq!(addr, self.addr);
                    self.child = Some(child);
                    return;
                }
                Err(e) => assert!(Instant::now() < until, "could not restart the server on {}: {e}", self.addr),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn client(&self) -> RemoteCoordinator {
        RemoteCoordinator::connect(self.client_config()).unwrap()
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.endpoint());
        c.retry_budget = Duration::from_secs(60);
        c
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}
