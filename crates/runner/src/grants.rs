//! What the caller gives a bundle besides its manifest ([`Grants`]: its data directory, env
//! values, decrypted secrets), and the environment a bundle then sees ([`bundle_env`]), the
//! same for every runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;

use atoll_atproto::bundle::Manifest;

use crate::LoadError;

/// What the caller gives a bundle besides its manifest.
#[derive(Default, Clone)]
pub struct Grants {
    /// The bundle's own directory; its declared `read`/`write` paths are directories under it.
    pub data_dir: Option<PathBuf>,
    /// Values for environment variables; only the names in `permissions.env` reach the bundle.
    pub env: BTreeMap<String, String>,
    /// Decrypted secrets, by name; each must be declared in the manifest's `secrets`.
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("data_dir", &self.data_dir)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The declared env names the caller gave values for, and the secrets (all declared, the
/// required ones present).
pub(crate) fn bundle_env(manifest: &Manifest, grants: &Grants) -> Result<Vec<(String, String)>, LoadError> {
    for name in grants.secrets.keys() {
        if !manifest.secrets.iter().any(|s| &s.name == name) {
            return Err(LoadError::UndeclaredSecret(name.clone()));
        }
    }
    if let Some(s) = manifest.secrets.iter().find(|s| s.required && !grants.secrets.contains_key(&s.name)) {
        return Err(LoadError::MissingSecret(s.name.clone()));
    }
    let declared = grants.env.iter().filter(|(k, _)| manifest.permissions.env.contains(k));
    Ok(declared.chain(&grants.secrets).map(|(k, v)| (k.clone(), v.clone())).collect())
}
