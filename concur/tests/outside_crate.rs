//! The acceptance test of the `concur` crate: a new crate outside this
//! workspace depends on `concur` by path with one backend feature, builds
//! offline and runs on that backend; the same source (`tests/outside/program.rs`
//! and its `tasks.rs`) with the other feature runs on the other backend.
//!
//! Each build uses the workspace's `Cargo.lock` (so it needs nothing the
//! workspace does not already use) and a target directory of its own under
//! the workspace's, `target/outside-crate`, so reruns are incremental and the
//! nested cargo never waits for the lock of the cargo running this test.
//! One build per feature set.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Bounds a build: a cold one compiles concur and its dependencies.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Bounds a run of the built program.
const RUN_LIMIT: Duration = Duration::from_secs(120);

const PROGRAM: &str = include_str!("outside/program.rs");
const TASKS: &str = include_str!("outside/tasks.rs");

/// A crate written into a temporary directory, removed when dropped unless
/// the test failed (then it stays for a look, and its path is printed).
struct OutsideCrate {
    dir: PathBuf,
    name: String,
}

impl OutsideCrate {
    /// Writes the crate `outside-<feature>` depending on `concur` with only
    /// `feature`.
    fn write(feature: &str) -> Self {
        let name = format!("outside-{feature}");
        let dir = std::env::temp_dir().join(format!("concur-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).expect("create the crate's directory");
        let concur = Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = format!(
            r#"[package]
name = "{name}"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
concur = {{ path = {concur:?}, default-features = false, features = ["{feature}"] }}
serde = {{ version = "1", features = ["derive"] }}

# Not a member of any workspace above the temporary directory.
[workspace]
"#
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
        std::fs::write(dir.join("src/main.rs"), PROGRAM).expect("write src/main.rs");
        std::fs::write(dir.join("src/tasks.rs"), TASKS).expect("write src/tasks.rs");
        let lock = concur.join("../Cargo.lock");
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", lock.display()));
        eprintln!("outside crate: {}", dir.display());
        Self { dir, name }
    }

    /// Builds the crate offline and returns its binary.
    fn build(&self) -> PathBuf {
        let target = common::profile_dir()
            .parent()
            .expect("the workspace's target directory")
            .join("outside-crate");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--offline", "--manifest-path"])
            .arg(self.dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&self.dir);
        let what = format!("cargo build of {}", self.name);
        let (_, output) = common::run(&what, command, BUILD_LIMIT);
        common::assert_success(&what, &output);
        target.join("debug").join(&self.name)
    }
}

impl Drop for OutsideCrate {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs the built program with `CONCUR_BACKEND` set to `backend` (or unset).
fn run(bin: &Path, backend: Option<&str>) -> Output {
    let mut command = Command::new(bin);
    match backend {
        Some(b) => command.env(concur::ENV_BACKEND, b),
        None => command.env_remove(concur::ENV_BACKEND),
    };
    common::run(&format!("{}", bin.display()), command, RUN_LIMIT).1
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What the program prints on a build with only `feature`: its results,
/// then the refusal of every backend it lacks (`Backend::ALL` order, so
/// redis too, which needs a broker and is never the outside crate's one).
fn expected(feature: &str, in_worker: bool) -> Vec<String> {
    let mut lines = vec![
        format!("backend: {feature}"),
        "struct task: 49".to_owned(),
        "map: [1, 4, 9]".to_owned(),
        format!("macro task in a worker process: {in_worker}"),
        "function task: 27".to_owned(),
        "map_fn with a closure: [3, 7]".to_owned(),
        "is_worker in main: false".to_owned(),
    ];
    for missing in concur::Backend::ALL
        .iter()
        .map(|b| b.as_str())
        .filter(|b| *b != feature)
    {
        lines.push(format!(
            "{missing}: invalid `backend`: backend `{missing}` is not compiled in \
             (this build has: {feature}); enable the cargo feature `{missing}` of the `concur` crate"
        ));
    }
    lines
}

/// Builds the crate with only `feature`, runs it, then asks it (through
/// `CONCUR_BACKEND`) for the backend it lacks.
fn check(feature: &str, missing: &str, in_worker: bool) {
    let krate = OutsideCrate::write(feature);
    let bin = krate.build();

    let output = run(&bin, None);
    common::assert_success(&krate.name, &output);
    assert_eq!(stdout_lines(&output), expected(feature, in_worker));

    let output = run(&bin, Some(missing));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: invalid `CONCUR_BACKEND`: backend `{missing}` is not compiled in"
        )) && stderr.contains(&format!("enable the cargo feature `{missing}`")),
        "{stderr}"
    );
}

#[test]
fn outside_crate_runs_on_procs_with_only_the_procs_feature() {
    check("procs", "threads", true);
}

#[test]
fn outside_crate_runs_on_threads_with_only_the_threads_feature() {
    check("threads", "procs", false);
}
