//! Records the git commit in result files.
include!("../build/commit.rs");

fn main() {
    record_commit("../.git");
}
