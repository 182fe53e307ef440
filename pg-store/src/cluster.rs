//! A throwaway PostgreSQL cluster for tests, benchmarks and the demo: the
//! server binaries of the OS package, `initdb` in a temporary directory,
//! a free port on 127.0.0.1, a Unix socket in the same directory.
//!
//! The server refuses to run as root; when this process is root the
//! cluster belongs to, and runs as, the `postgres` user (`runuser -u
//! postgres --`). The cluster is stopped and its directory removed when the
//! [`Cluster`] is dropped — and also when this process ends in any other
//! way (a panic, `exit`, a kill): a small watchdog shell waits on a pipe
//! only this process holds, and cleans up when the pipe closes. So a test
//! binary can keep one cluster in a `static` for all its tests.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Environment variable naming the directory of `initdb`, `pg_ctl` and
/// `postgres`, when they are not found by themselves.
pub const BIN_DIR_ENV: &str = "TRUSTLINE_PG_BIN";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

/// Finds the directory holding `initdb` and `pg_ctl`: [`BIN_DIR_ENV`], then
/// the newest `/usr/lib/postgresql/<version>/bin`, then `PATH`.
///
/// # Errors
/// [`Error::Cluster`] naming the package to install.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return Ok(dir);
            }
        }
    }
    Err(Error::Cluster(format!(
        "initdb and pg_ctl not found: install the `postgresql` OS package (scripts/install-deps.sh \
         does) or set {BIN_DIR_ENV}"
    )))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| Error::io("running id", e))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                Error::Cluster(
                    "running as root needs the `postgres` user (the server refuses root): install \
                     the `postgresql` OS package"
                        .into(),
                )
            })
    };
    Ok((id("-u")?, id("-g")?))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e))?;
    let port = l
        .local_addr()
        .map_err(|e| Error::io("finding a free port", e))?
        .port();
    Ok(port)
}

impl Cluster {
    /// Creates and starts a cluster.
    ///
    /// # Errors
    /// [`Error::Cluster`] with the server's log when it does not start.
    pub fn start() -> Result<Cluster> {
        let bin = find_bin_dir()?;
        let as_postgres = is_root();
        let root = tempfile::Builder::new()
            .prefix("trustline-pg")
            .tempdir()
            .map_err(|e| Error::io("creating the cluster directory", e))?
            .keep();
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("handing {} to postgres", root.display()), e))?;
        }
        let mut cluster = Cluster {
            root,
            bin,
            port: 0,
            as_postgres,
            watchdog: Mutex::new(None),
        };
        cluster.spawn_watchdog()?;
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data_dir().to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
                "--no-sync",
            ],
        )?;
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port()?;
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Cluster(last))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL.
    ///
    /// # Errors
    /// [`Error::Database`] and [`Error::Unavailable`].
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::Unavailable(crate::db::describe(&e)))?;
        let task = tokio::spawn(conn);
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let made = client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
            .map_err(|source| Error::Database {
                context: format!("creating database {name}"),
                source,
            });
        drop(client);
        let _ = task.await;
        made.map(|()| self.url(name))
    }

    /// Stops the server (fast shutdown: sessions are cut, committed work
    /// is kept).
    ///
    /// # Errors
    /// [`Error::Cluster`].
    pub fn stop(&self) -> Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Starts the server again on the same port after [`Cluster::stop`].
    ///
    /// # Errors
    /// [`Error::Cluster`].
    pub fn restart(&self) -> Result<()> {
        self.start_server()
    }

    fn start_server(&self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c shared_buffers=128MB -c fsync=on -c synchronous_commit=on",
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log");
        let r = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        r.map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            Error::Cluster(format!(
                "{e}; server log: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        })
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.current_dir(&self.root);
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {tool}"), e))?;
        if !out.status.success() {
            return Err(Error::Cluster(format!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// The watchdog: `read` returns when this process's end of the pipe
    /// closes, however the process ends; then the server is stopped at once
    /// and the directory removed.
    fn spawn_watchdog(&self) -> Result<()> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {}/data -m immediate stop",
                pg_ctl.display(),
                self.root.display()
            )
        } else {
            format!(
                "{} -D {}/data -m immediate stop",
                pg_ctl.display(),
                self.root.display()
            )
        };
        let script = format!(
            "read _ignored; {stop} >/dev/null 2>&1; rm -rf {}",
            shell_quote(&self.root)
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("starting the cluster watchdog", e))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::Cluster("the watchdog has no stdin".into()))?;
        *self.watchdog.lock().unwrap_or_else(|p| p.into_inner()) = Some((child, stdin));
        Ok(())
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let taken = self
            .watchdog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((mut child, mut stdin)) = taken {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}
