// Shared by the build scripts of both packages: records the git commit.
fn record_commit(git_dir: &str) {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    // A build of a tree with uncommitted changes says so: its results must
    // not be taken for the commit's.
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let commit = if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=RINGECHO_COMMIT={commit}");
    println!("cargo:rerun-if-changed=src");
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        let path = std::path::Path::new(git_dir).join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
