//! This host's own credential, kept in its data directory (`host.token`, mode 0600).
//!
//! Why: the cluster's join token only registers hosts; the answer to a registration is
//! a token that speaks for this one host (its heartbeats, its assignments, the buckets
//! of what it runs). Kept on disk, it survives a restart, so a restarted host needs
//! neither the join token nor to wait until its old self is judged NotReady.

use std::io::Write as _;
use std::path::{Path, PathBuf};

fn path(dir: &Path) -> PathBuf {
    dir.join("host.token")
}

/// The credential kept in `dir`, if any. One that cannot be read is an error (not "no
/// credential": registering anew while this host is Ready is refused).
pub fn read(dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path(dir)) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Keeps `token` in `dir`, readable by this user only: temporary file, fsync, rename.
pub fn keep(dir: &Path, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = path(dir);
    let tmp = file.with_extension("token.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_credential_is_read_back_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        keep(dir.path(), "secret-1").unwrap();
        keep(dir.path(), "secret-2").unwrap();
        assert_eq!(read(dir.path()).unwrap().as_deref(), Some("secret-2"));
        let mode = std::fs::metadata(dir.path().join("host.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
