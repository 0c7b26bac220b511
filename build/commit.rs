// Shared by the build scripts of both packages: records the git commit.
fn record_commit(git_dir: &str) {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RINGECHO_COMMIT={commit}");
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        let path = std::path::Path::new(git_dir).join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
