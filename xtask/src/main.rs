//! Project automation, run as `cargo xtask <command>`:
//!
//! - `codegen [--check]`: regenerate `amqp-codec`'s methods, and the strategies of its property
//!   tests, from the vendored spec;
//! - `check-deps`: enforce the dependency rules of `docs/ARCHITECTURE.md`;
//! - `interop`: pika and the `amqp-tools` command-line tools against the reference server;
//! - `crash [--cycles N] [--seed S] [--port P] [--server PATH]`: `kill -9` the reference server
//!   under publisher-confirmed load, restart it, and check that no confirmed message was lost;
//! - `ci`: everything CI runs (format, clippy, docs, tests, codegen check, dependency rules,
//!   fuzz-target build).

mod codegen;
mod crash;
mod deps;
mod interop;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    let result = match args.first().map(String::as_str) {
        Some("codegen") => codegen::run(&root, args.iter().any(|a| a == "--check")),
        Some("check-deps") => deps::check(&root),
        Some("interop") => interop::run(&root),
        Some("crash") => crash::run(&root, &args[1..]),
        Some("ci") => ci(&root),
        _ => Err(
            "usage: cargo xtask <codegen [--check] | check-deps | interop | crash [--cycles N] \
             [--seed S] [--port P] [--server PATH] | ci>"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command in the workspace root, failing with its description if it fails.
fn run(root: &Path, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let shown = format!("{program} {}", args.join(" "));
    eprintln!("==> {shown}");
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root)
        .status()
        .map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

fn ci(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(root, &cargo, &["fmt", "--all", "--check"], &[])?;
    eprintln!("==> codegen --check");
    codegen::run(root, true)?;
    eprintln!("==> check-deps");
    deps::check(root)?;
    run(
        root,
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    run(
        root,
        &cargo,
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    run(
        root,
        &cargo,
        &["test", "--workspace", "--all-targets", "--locked"],
        &[],
    )?;
    run(
        root,
        &cargo,
        &["test", "--workspace", "--doc", "--locked"],
        &[],
    )?;
    interop::run(root)?;
    // The short crash test: a few `kill -9` cycles under confirmed load, on the server
    // interop built.
    let server = root.join("target/debug/examples/server");
    crash::run(root, &["--server".into(), server.display().to_string()])?;
    // The fuzz targets are their own workspace; CI at least builds them.
    run(
        root,
        &cargo,
        &[
            "build",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--locked",
            "--bins",
        ],
        &[],
    )?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The committed generated files (`generated.rs` and the test strategies) are exactly what
    /// the generator produces from the spec.
    #[test]
    fn generated_code_is_up_to_date() {
        let root = super::root();
        let files = super::codegen::generate(&root).expect("generate");
        let paths: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
        assert_eq!(
            paths,
            [super::codegen::OUT, super::codegen::OUT_STRATEGIES],
            "every generated file is checked"
        );
        for (path, fresh) in files {
            let committed = std::fs::read_to_string(root.join(path))
                .unwrap_or_else(|e| panic!("read {path}: {e}"));
            assert!(
                fresh == committed,
                "{path} is stale: run `cargo xtask codegen`"
            );
        }
    }
}
