//! Loading and writing the key file.
//!
//! Owns where keys come from (the `keys_env` environment variable if configured and set, else
//! `keys_file`) and how `wsguard keygen` writes them (owner-only permissions, atomic replace).
//! It must never print, log or put in an error message any secret or any line of a key file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use wsguard_token::{KeyFile, KeyRing};
use zeroize::Zeroizing;

use crate::config::Config;

/// Reads the key ring the configuration points at.
pub fn load(config: &Config) -> anyhow::Result<KeyRing> {
    let s = &config.sessions;
    if let Some(var) = &s.keys_env
        && let Some(value) = std::env::var_os(var)
    {
        let text = Zeroizing::new(
            value
                .into_string()
                .map_err(|_| anyhow::anyhow!("{var}: not valid UTF-8"))?,
        );
        let file = KeyFile::parse(&text).with_context(|| format!("keys from ${var}"))?;
        return check_legacy(
            config,
            KeyRing::from_file(&file).with_context(|| format!("keys from ${var}"))?,
            &file,
        );
    }
    let path = &s.keys_file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no key file at {} (sessions.keys_file): create one with `wsguard keygen`",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    warn_if_readable_by_others(path, "key file");
    let file = KeyFile::parse(&text).with_context(|| format!("key file {}", path.display()))?;
    let ring = KeyRing::from_file(&file).with_context(|| format!("key file {}", path.display()))?;
    check_legacy(config, ring, &file)
}

fn check_legacy(config: &Config, ring: KeyRing, file: &KeyFile) -> anyhow::Result<KeyRing> {
    if config.sessions.accept_legacy_tokens && file.legacy_secret.is_none() {
        bail!(
            "sessions.accept_legacy_tokens: needs a legacy_secret in the key file (the tutorial's \
             secret); without it no legacy token can verify"
        );
    }
    Ok(ring)
}

/// Warns when a file holding a secret (`what`: "key file", "admin token file") can be read by
/// its group or by other users.
#[cfg(unix)]
pub(crate) fn warn_if_readable_by_others(path: &Path, what: &'static str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            file = what,
            "a secret file is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
pub(crate) fn warn_if_readable_by_others(_: &Path, _: &'static str) {}

/// What `keygen` did.
pub enum KeygenOutcome {
    /// A new file with one signing key.
    Created { id: String },
    /// A new signing key; the previous one verifies until the given time.
    Rotated { id: String, previous_until: u64 },
}

/// Creates the key file, or rotates it if it exists. Writes a temporary file with mode 0600 next
/// to it and renames it into place, so a crash never leaves a half-written key file.
pub fn keygen(path: &Path, now: u64, keep_previous_for: u64) -> anyhow::Result<KeygenOutcome> {
    let (mut file, existed) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let file =
                KeyFile::parse(&text).with_context(|| format!("key file {}", path.display()))?;
            (file, true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (KeyFile::default(), false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let id = file.rotate(now, keep_previous_for);
    // Refuse to write a file we could not load back.
    KeyRing::from_file(&file).context("rotated key file is invalid")?;
    write_private(path, &file.to_toml())?;
    Ok(if existed {
        KeygenOutcome::Rotated {
            id,
            previous_until: now.saturating_add(keep_previous_for),
        }
    } else {
        KeygenOutcome::Created { id }
    })
}

/// A fresh key file text with one signing key (for `keygen --stdout`).
pub fn fresh(now: u64) -> Zeroizing<String> {
    let mut file = KeyFile::default();
    file.rotate(now, 0);
    Zeroizing::new(file.to_toml())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("key file path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
