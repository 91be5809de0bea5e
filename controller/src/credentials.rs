//! The cluster's credentials: API tokens (kept in the state only as SHA-256 hashes) and
//! the files they and other keys are written to (readable by their owner alone). Secrets
//! that apps use are another thing: `crate::vault`.

use std::path::Path;

use sha2::{Digest as _, Sha256};

/// SHA-256 of a token, as stored in the state.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token: 32 bytes, hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Writes a secret readable only by this user.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Reads a secret written by [`write_secret`] (without its trailing newline).
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}
