//! Bundle secrets: values only this host's runner can read. Each host has an X25519 key pair
//! (`<data>/bundles/runner.key`, mode 0600); authors seal a value to its public key (a NaCl
//! sealed box: X25519 + XSalsa20-Poly1305, libsodium's `crypto_box_seal`, as at-run does) and
//! put it in the record's `secrets[].sealed`, or an operator gives it at `bundle run --secret`
//! and it is sealed here before it is stored. Values are opened only when a bundle is loaded,
//! handed to the runtime as environment, and never logged, listed or returned.

use std::collections::BTreeMap;
use std::path::Path;

use atoll_atproto::bundle::{Manifest, SealedSecret};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};

use crate::BundleError;

/// The file the host's key is kept in, under the bundles directory.
pub const KEY_FILE: &str = "runner.key";

/// The most bytes one secret's value may have.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// This host's runner key.
pub struct RunnerKey {
    secret: SecretKey,
}

impl RunnerKey {
    /// Reads the key in `dir`, making one the first time.
    pub fn open(dir: &Path) -> Result<RunnerKey, BundleError> {
        let path = dir.join(KEY_FILE);
        let io = |source| BundleError::Store { path: path.clone(), source };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let raw: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| io(std::io::Error::other(format!("holds {} bytes, not a 32-byte X25519 key", bytes.len()))))?;
                Ok(RunnerKey { secret: SecretKey::from(raw) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = SecretKey::generate(&mut OsRng);
                atoll_util::atomic_write(&path, &secret.to_bytes(), 0o600).map_err(|e| io(std::io::Error::other(e)))?;
                Ok(RunnerKey { secret })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The island's key, the same on every member: derived from the island's secret `seed`
    /// (32 bytes the CA host made and members fetch over mTLS, never in the log) by
    /// HKDF-SHA256 (RFC 5869) under its own label, so it is independent of the seed's other uses.
    pub fn derive(seed: &[u8]) -> RunnerKey {
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"atoll").extract(seed);
        let mut raw = [0u8; 32];
        prk.expand(&[b"bundle runner key v1"], ring::hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut raw))
            .expect("32 bytes is within HKDF-SHA256's output");
        RunnerKey { secret: SecretKey::from(raw) }
    }

    /// The public key, base64 (what `atoll bundle key` prints and authors seal to).
    pub fn public(&self) -> String {
        B64.encode(self.secret.public_key().as_bytes())
    }

    /// Opens a sealed box addressed to this key.
    pub fn open_sealed(&self, ciphertext_b64: &str) -> Result<String, String> {
        let sealed = B64.decode(ciphertext_b64.trim()).map_err(|e| format!("the ciphertext is not base64: {e}"))?;
        let plain = self
            .secret
            .unseal(&sealed)
            .map_err(|_| "it does not open with this host's key (sealed to another key, or altered)".to_owned())?;
        String::from_utf8(plain).map_err(|_| "its value is not UTF-8 text".to_owned())
    }
}

/// Seals `value` to `recipient` (a base64 X25519 public key), for a record's `sealed` list.
pub fn seal(recipient: &str, value: &str) -> Result<SealedSecret, String> {
    let raw: [u8; 32] = B64
        .decode(recipient.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("`{recipient}` is not a base64 X25519 public key (32 bytes): `atoll bundle key` prints one"))?;
    let ciphertext = PublicKey::from(raw).seal(&mut OsRng, value.as_bytes()).map_err(|_| "sealing failed".to_owned())?;
    Ok(SealedSecret { recipient: recipient.trim().to_owned(), ciphertext: B64.encode(ciphertext) })
}

/// The values of `manifest`'s secrets this host can open: from `given` (sealed to this host
/// at `bundle run`) first, then from the record's own `sealed` entries for this host's key.
/// A required secret with neither is an error naming it; so is a given name the manifest does
/// not declare, and a sealed value that does not open.
pub fn open_all(key: &RunnerKey, manifest: &Manifest, given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, BundleError> {
    for name in given.keys() {
        if !manifest.secrets.iter().any(|s| &s.name == name) {
            let declared: Vec<&str> = manifest.secrets.iter().map(|s| s.name.as_str()).collect();
            return Err(BundleError::Invalid(format!(
                "secret {name} is not one the bundle declares (it declares: {})",
                if declared.is_empty() { "none".to_owned() } else { declared.join(", ") }
            )));
        }
    }
    let me = key.public();
    let mut out = BTreeMap::new();
    for s in &manifest.secrets {
        let sealed =
            given.get(&s.name).map(String::as_str).or_else(|| s.sealed.iter().find(|e| e.recipient == me).map(|e| e.ciphertext.as_str()));
        match sealed {
            Some(c) => {
                let v = key.open_sealed(c).map_err(|why| BundleError::Invalid(format!("secret {}: {why}", s.name)))?;
                out.insert(s.name.clone(), v);
            }
            None if s.required => {
                return Err(BundleError::Invalid(format!(
                    "secret {} is required and none is sealed to this host: give it with `atoll bundle run … --secret {}=@FILE`, or seal it to `atoll bundle key`'s key in the record",
                    s.name, s.name
                )));
            }
            None => {}
        }
    }
    Ok(out)
}

/// `KEY=VALUE` or `KEY=@FILE` (the file's contents, one trailing newline dropped), as `bundle
/// run --secret` takes them; read on the client's side.
pub fn parse_arg(arg: &str, read_file: impl Fn(&str) -> std::io::Result<String>) -> Result<(String, String), String> {
    let (k, v) = arg.split_once('=').ok_or_else(|| format!("--secret {arg}: expected KEY=VALUE or KEY=@FILE"))?;
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("--secret: `{k}` is not a secret name (letters, digits and _)"));
    }
    let v = match v.strip_prefix('@') {
        Some(file) => {
            let text = read_file(file).map_err(|e| format!("--secret {k}: reading {file}: {e}"))?;
            text.strip_suffix('\n').map(str::to_owned).unwrap_or(text)
        }
        None => v.to_owned(),
    };
    if v.len() > MAX_VALUE_BYTES {
        return Err(format!("--secret {k}: the value is over {MAX_VALUE_BYTES} bytes"));
    }
    Ok((k.to_owned(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(secrets: serde_json::Value) -> Manifest {
        Manifest::from_record(&serde_json::json!({
            "name": "s", "version": "1.0.0", "runtime": "oci", "entry": "busybox",
            "routes": [{"method": "GET", "path": "/", "handler": "http"}],
            "secrets": secrets,
        }))
        .unwrap()
    }

    #[test]
    fn a_value_sealed_to_the_key_opens_and_only_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = RunnerKey::open(dir.path()).unwrap();
        assert_eq!(RunnerKey::open(dir.path()).unwrap().public(), key.public(), "the key is kept");
        let sealed = seal(&key.public(), "hunter2").unwrap();
        assert_eq!(key.open_sealed(&sealed.ciphertext).unwrap(), "hunter2");
        let other = RunnerKey::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.open_sealed(&sealed.ciphertext).unwrap_err().contains("does not open"));
        let mut tampered = B64.decode(&sealed.ciphertext).unwrap();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open_sealed(&B64.encode(tampered)).is_err());
        assert!(seal("not-a-key", "x").unwrap_err().contains("atoll bundle key"));
    }

    /// Every member derives the same island key from the island's seed; another seed, or a
    /// host's own key, opens nothing sealed to it.
    #[test]
    fn the_island_key_is_the_same_on_every_member_and_only_there() {
        let seed = [7u8; 32];
        let (a, b) = (RunnerKey::derive(&seed), RunnerKey::derive(&seed));
        assert_eq!(a.public(), b.public());
        let sealed = seal(&a.public(), "on any member").unwrap();
        assert_eq!(b.open_sealed(&sealed.ciphertext).unwrap(), "on any member");
        assert!(RunnerKey::derive(&[8u8; 32]).open_sealed(&sealed.ciphertext).is_err());
        let host = RunnerKey::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(host.open_sealed(&sealed.ciphertext).is_err());
        // Not the seed itself used as a key: the seed's other use (sealing certificates' keys)
        // and this one are independent.
        assert_ne!(a.secret.to_bytes(), seed);
    }

    #[test]
    fn secrets_come_from_run_then_the_record_and_required_ones_must_be_there() {
        let dir = tempfile::tempdir().unwrap();
        let key = RunnerKey::open(dir.path()).unwrap();
        let in_record = seal(&key.public(), "from-record").unwrap();
        let elsewhere = seal(&RunnerKey::open(tempfile::tempdir().unwrap().path()).unwrap().public(), "not ours").unwrap();
        let m = manifest(serde_json::json!([
            {"name": "A", "sealed": [elsewhere, in_record]},
            {"name": "B"},
            {"name": "C", "required": false},
        ]));
        let err = open_all(&key, &m, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("secret B is required") && err.contains("--secret B=@FILE"), "{err}");
        let given = BTreeMap::from([("B".to_owned(), seal(&key.public(), "given").unwrap().ciphertext)]);
        let open = open_all(&key, &m, &given).unwrap();
        assert_eq!(open, BTreeMap::from([("A".into(), "from-record".into()), ("B".into(), "given".into())]));
        let stray = BTreeMap::from([("Z".to_owned(), seal(&key.public(), "z").unwrap().ciphertext)]);
        assert!(open_all(&key, &m, &stray).unwrap_err().to_string().contains("secret Z is not one the bundle declares"));
    }

    #[test]
    fn secret_arguments() {
        let read = |f: &str| if f == "tok" { Ok("abc\n".to_owned()) } else { Err(std::io::Error::other("no such file")) };
        assert_eq!(parse_arg("TOKEN=@tok", read).unwrap(), ("TOKEN".into(), "abc".into()));
        assert_eq!(parse_arg("TOKEN=a=b", read).unwrap(), ("TOKEN".into(), "a=b".into()));
        assert!(parse_arg("TOKEN", read).unwrap_err().contains("KEY=VALUE"));
        assert!(parse_arg("TOKEN=@missing", read).unwrap_err().contains("reading missing"));
        assert!(parse_arg("BAD-NAME=x", read).unwrap_err().contains("not a secret name"));
    }
}
