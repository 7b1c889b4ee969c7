//! Shared by the tests that run the built examples.

use std::path::PathBuf;

/// The path of a built example: `cargo test` builds the examples next to the test
/// binaries (`target/<profile>/examples/<name>`).
pub fn example(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join(name)
}
