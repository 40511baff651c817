//! Shared by the integration tests that run a fixture script with a real Python.

use std::path::Path;
use std::process::Command;

/// Runs `script OUT_DIR` with the first Python that succeeds: `NC_PYTHON`, else
/// `.venv-nc-export/bin/python` (made by scripts/test.sh), else `python3`. Returns whether one
/// did (false when none has the script's packages).
pub fn run_fixture_script(script: &Path, out_dir: &Path) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var("NC_PYTHON").ok(),
        Some(
            root.join(".venv-nc-export/bin/python")
                .display()
                .to_string(),
        ),
        Some("python3".to_string()),
    ];
    candidates.iter().flatten().any(|py| {
        Command::new(py)
            .arg(script)
            .arg(out_dir)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}
