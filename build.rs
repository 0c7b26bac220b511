//! Records the git commit in the binary, for `/stats` and result files.
include!("build/commit.rs");

fn main() {
    record_commit(".git");
}
