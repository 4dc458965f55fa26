//! A throwaway PostgreSQL server for tests and measurements: Debian's PostgreSQL 15
//! binaries, a cluster made in a temporary folder, listening on a free loopback port,
//! stopped when dropped.
//!
//! `initdb` refuses to run as root, so as root the server runs as the package's
//! `postgres` user (the folder is handed to it). A missing PostgreSQL is an error that
//! says how to install it, never a skipped test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where Debian's `postgresql-15` puts its programs; `PULMO_PG_BIN` overrides it.
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running PostgreSQL server with a `pulmo` superuser and trust authentication on
/// loopback.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// Makes a cluster and starts it (about 3 s).
    pub fn start() -> Result<Postgres, String> {
        let bin =
            std::env::var_os("PULMO_PG_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from);
        if !bin.join("initdb").exists() {
            return Err(format!(
                "PostgreSQL is not installed ({} has no initdb): run scripts/setup/setup.sh --test \
                 (it installs the Debian package postgresql) or set PULMO_PG_BIN",
                bin.display()
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("pulmo-pg")
            .tempdir()
            .map_err(|e| format!("could not make a folder for PostgreSQL: {e}"))?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path()))?;
        }
        let mut server = Postgres {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        server.initdb()?;
        // A free port can be taken between the probe and the start: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://pulmo@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL.
    pub fn database(&self, name: &str) -> Result<String, String> {
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("could not connect to the test PostgreSQL: {e}"))?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(|e| format!("could not create database {name}: {e}"))?;
        Ok(self.url(name))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn initdb(&self) -> Result<(), String> {
        run(self.command("initdb").arg("-D").arg(self.data()).args([
            "-A",
            "trust",
            "-U",
            "pulmo",
            "--no-sync",
        ]))
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "start"]))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    match command.output() {
        Ok(Output { status, .. }) if status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("could not run {shown}: {e}")),
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
