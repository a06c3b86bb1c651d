//! Names the commit the binary is built from, for `cerebellum --version`
//! and the provenance of what it writes:
//!
//!   CEREBELLUM_GIT_COMMIT  `git rev-parse --short HEAD`, or `unknown` when
//!                          the source is not a git checkout or git is absent
//!   CEREBELLUM_VERSION     "<package version> (<commit>)", e.g. "0.1.0 (f87300c)"
//!
//! The script reruns when HEAD moves (HEAD, the branch it names, the packed
//! refs), so a rebuild after a commit names the new one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `git ARGS` in this crate's folder: its trimmed output, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}

/// The file git keeps `name` in (HEAD, refs/heads/…, packed-refs), also in
/// a worktree.
fn git_path(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=CEREBELLUM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=CEREBELLUM_VERSION={version} ({commit})");
    println!("cargo:rerun-if-changed=build.rs");
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = ["HEAD", "packed-refs"]
        .into_iter()
        .map(str::to_owned)
        .chain(branch);
    for name in watched {
        // A path that does not exist would make cargo rerun the script on
        // every build.
        if let Some(path) = git_path(&name).filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
