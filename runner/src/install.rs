//! `install DIR`: the init container copies the runner into a shared volume.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Error;

pub const BINARY_NAME: &str = "zeroflow-runner";

/// Copies the running executable to `dir/zeroflow-runner`, mode 0755. Written to a temporary
/// name and renamed, so a half-copied binary is never executed.
pub fn install(dir: &Path) -> Result<PathBuf, Error> {
    let io = |what| move |source| Error::Io { what, source };
    let me = std::env::current_exe().map_err(io("finding the runner's executable"))?;
    std::fs::create_dir_all(dir).map_err(io("creating the install directory"))?;
    let target = dir.join(BINARY_NAME);
    let partial = dir.join(format!(".{BINARY_NAME}.partial"));
    std::fs::copy(&me, &partial).map_err(io("copying the runner"))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(io("making the runner executable"))?;
    std::fs::rename(&partial, &target).map_err(io("moving the runner in place"))?;
    Ok(target)
}
