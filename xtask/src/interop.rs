//! `cargo xtask interop`: other real clients against the reference server.
//!
//! Starts `examples/server` on a free port, then runs Python's pika (installed into a local
//! virtualenv under `target/interop/`) with `xtask/scripts/interop_pika.py`, and the
//! `amqp-tools` command-line tools (`amqp-declare-queue`, `amqp-publish`, `amqp-get`,
//! `amqp-consume`, `amqp-delete-queue`), checking their output. Finally it stops the server with
//! SIGTERM and checks that it exits cleanly.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pika version the check installs.
const PIKA: &str = "pika==1.3.2";

/// Kills the server if the check fails half-way.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The Python interpreter of a virtualenv under `target/interop/` with pika installed, created
/// on first use; `interop` and `crash` share it.
pub(crate) fn pika_python(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join("target/interop/venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        crate::run(
            root,
            "python3",
            &["-m", "venv", &venv.to_string_lossy()],
            &[],
        )?;
    }
    crate::run(
        root,
        &python.to_string_lossy(),
        &[
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            PIKA,
        ],
        &[],
    )?;
    Ok(python)
}

pub(crate) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let shown = format!("{program} {}", args.join(" "));
    eprintln!("==> {shown}");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{shown}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn run(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run(
        root,
        &cargo,
        &["build", "--example", "server", "--locked"],
        &[],
    )?;
    let work = root.join("target/interop");
    let data = work.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;

    let python = pika_python(root)?;
    for tool in [
        "amqp-publish",
        "amqp-get",
        "amqp-consume",
        "amqp-declare-queue",
    ] {
        if Command::new(tool).arg("--help").output().is_err() {
            return Err(format!(
                "`{tool}` not found: install the amqp-tools package (apt-get install amqp-tools)"
            ));
        }
    }

    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let binary = root.join("target/debug/examples/server");
    eprintln!("==> starting {} on {addr}", binary.display());
    let child = Command::new(&binary)
        .args(["--listen", &addr, "--data-dir"])
        .arg(&data)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let mut server = Server(Some(child));
    let start = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!("the server did not listen on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // pika.
    crate::run(
        root,
        &python.to_string_lossy(),
        &["xtask/scripts/interop_pika.py", &port.to_string()],
        &[],
    )?;

    // amqp-tools.
    let url = format!("amqp://guest:guest@{addr}");
    let declared = output(
        "amqp-declare-queue",
        &["--url", &url, "-q", "interop.tools", "-d"],
    )?;
    if declared.trim() != "interop.tools" {
        return Err(format!("amqp-declare-queue printed {declared:?}"));
    }
    for body in ["one", "two", "three"] {
        output(
            "amqp-publish",
            &[
                "--url",
                &url,
                "-r",
                "interop.tools",
                "-p",
                "-C",
                "text/plain",
                "-b",
                body,
            ],
        )?;
    }
    let got = output("amqp-get", &["--url", &url, "-q", "interop.tools"])?;
    if got != "one" {
        return Err(format!("amqp-get printed {got:?}, expected \"one\""));
    }
    let consumed = output(
        "amqp-consume",
        &["--url", &url, "-q", "interop.tools", "-c", "2", "cat"],
    )?;
    if consumed != "twothree" {
        return Err(format!(
            "amqp-consume printed {consumed:?}, expected \"twothree\""
        ));
    }
    let empty = Command::new("amqp-get")
        .args(["--url", &url, "-q", "interop.tools"])
        .output()
        .map_err(|e| format!("amqp-get: {e}"))?;
    if empty.status.success() {
        return Err("amqp-get on an empty queue should fail".into());
    }
    output("amqp-delete-queue", &["--url", &url, "-q", "interop.tools"])?;
    eprintln!("amqp-tools interop: all checks passed");

    // A clean stop on SIGTERM.
    let Some(mut child) = server.0.take() else {
        return Err("server handle lost".into());
    };
    output("kill", &["-TERM", &child.id().to_string()])?;
    let start = Instant::now();
    loop {
        match child.try_wait().map_err(|e| format!("wait: {e}"))? {
            Some(status) if status.success() => break,
            Some(status) => return Err(format!("the server exited with {status} on SIGTERM")),
            None if start.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                return Err("the server did not stop within 10 s of SIGTERM".into());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    eprintln!("xtask interop: all checks passed");
    Ok(())
}
