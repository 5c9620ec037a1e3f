//! Backups of the island (`atoll island backup FILE`, `atoll island restore FILE`): a
//! consistent copy of the replicated state (every document, read after a ReadIndex on the
//! leader) and the island's CA keys, so that an island can be rebuilt after losing every host.
//!
//! The file is sealed with a passphrase: `ATOLLBK1`, a 16-byte salt, a 12-byte nonce, then the
//! JSON [`Backup`] encrypted with ChaCha20-Poly1305 (RFC 8439) under a key derived from the
//! passphrase by PBKDF2-HMAC-SHA256 (RFC 8018) with 600 000 iterations (OWASP's 2023 figure).
//! A wrong passphrase and a damaged file are told apart only as far as the AEAD allows: both
//! fail to open, and say so.

use std::num::NonZeroU32;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"ATOLLBK1";
const ITERATIONS: u32 = 600_000;
/// Passphrases shorter than this are refused.
pub const MIN_PASSPHRASE: usize = 12;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The island's ID and name, and when the backup was made (unix seconds).
    pub island_id: String,
    pub island_name: String,
    pub created: i64,
    /// Every document of the replicated state.
    pub keyspace: atoll_state::keyspace::Keyspace,
    /// The CA host's keys: the X.509 CA key (PEM), Nebula's CA certificate and key.
    pub x509_key: String,
    pub nebula_ca_crt: String,
    pub nebula_ca_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the passphrase is too short: give at least {MIN_PASSPHRASE} characters")]
    ShortPassphrase,
    #[error("this is not an Atoll backup (it does not start with ATOLLBK1)")]
    NotABackup,
    #[error("the backup cannot be opened: the passphrase is wrong, or the file is damaged")]
    Open,
    #[error("the backup opened but its contents are not a backup this version understands")]
    Contents(#[source] serde_json::Error),
    #[error("no random numbers from the system")]
    Random,
}

fn key(passphrase: &str, salt: &[u8]) -> LessSafeKey {
    let mut k = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(ITERATIONS).expect("non-zero"),
        salt,
        passphrase.as_bytes(),
        &mut k,
    );
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte key"))
}

/// Seals `backup` with `passphrase`.
pub fn seal(backup: &Backup, passphrase: &str) -> Result<Vec<u8>, BackupError> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(BackupError::ShortPassphrase);
    }
    let rng = SystemRandom::new();
    let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
    rng.fill(&mut salt).map_err(|_| BackupError::Random)?;
    rng.fill(&mut nonce).map_err(|_| BackupError::Random)?;
    let mut data = serde_json::to_vec(backup).expect("a backup serialises");
    key(passphrase, &salt)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(MAGIC), &mut data)
        .map_err(|_| BackupError::Open)?;
    let mut out = Vec::with_capacity(MAGIC.len() + salt.len() + nonce.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Opens a sealed backup.
pub fn open(sealed: &[u8], passphrase: &str) -> Result<Backup, BackupError> {
    let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or(BackupError::NotABackup)?;
    if rest.len() < 16 + 12 + CHACHA20_POLY1305.tag_len() {
        return Err(BackupError::Open);
    }
    let (salt, rest) = rest.split_at(16);
    let (nonce, ciphertext) = rest.split_at(12);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| BackupError::Open)?;
    let mut data = ciphertext.to_vec();
    let plain = key(passphrase, salt).open_in_place(nonce, Aad::from(MAGIC), &mut data).map_err(|_| BackupError::Open)?;
    serde_json::from_slice(plain).map_err(BackupError::Contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> Backup {
        let mut keyspace = atoll_state::keyspace::Keyspace::new();
        keyspace
            .apply(
                1,
                &atoll_state::Request::Put { key: "kv/a".into(), value: serde_json::json!(1), expect: atoll_state::Expect::Any },
                &atoll_state::schema::Code::CURRENT,
            )
            .unwrap();
        Backup {
            island_id: "i".into(),
            island_name: "friends".into(),
            created: 1,
            keyspace,
            x509_key: "key".into(),
            nebula_ca_crt: "crt".into(),
            nebula_ca_key: "nkey".into(),
        }
    }

    #[test]
    fn seals_and_opens_and_refuses_a_wrong_passphrase_a_damaged_file_and_a_stranger() {
        let b = backup();
        let sealed = seal(&b, "correct horse battery").unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"nkey"), "the keys are not in clear");
        assert_eq!(open(&sealed, "correct horse battery").unwrap(), b);
        assert!(matches!(open(&sealed, "correct horse battere"), Err(BackupError::Open)));
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(open(&damaged, "correct horse battery"), Err(BackupError::Open)));
        assert!(matches!(open(&sealed[..20], "correct horse battery"), Err(BackupError::Open)));
        assert!(matches!(open(b"PK\x03\x04 a zip file", "correct horse battery"), Err(BackupError::NotABackup)));
        assert!(matches!(seal(&b, "short"), Err(BackupError::ShortPassphrase)));
    }
}

/// Backing up and restoring the island of this daemon.
mod ops {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::{Backup, open, seal};
    use crate::consensus::{ConsensusError, ISLAND_KEY};
    use crate::lifecycle::{authority, check_mesh_prefix, issue_own, write_secret};
    use crate::manager::{CA_LIFETIME, Config, IslandError, Manager, io, unix_now};
    use crate::model::{Change, IslandState};
    use crate::store::{FileStore, Local, Paths, StateStore};

    impl Manager {
        /// A sealed backup: on the CA host (which holds the CA keys), after a write through the
        /// leader (`backup/last`) that this member has applied, so the copy holds everything
        /// committed before it was asked for.
        pub async fn backup(&self, passphrase: &str) -> Result<Vec<u8>, IslandError> {
            self.present()?;
            if self.authority.is_none() {
                let s = self.state();
                let ca = s.members.get(&s.island.ca_host).map_or_else(|| s.island.ca_host.clone(), |m| m.name.clone());
                return Err(IslandError::NotCaHost(ca));
            }
            let marker = serde_json::json!({ "created": unix_now(), "by": self.me });
            let put = atoll_state::Request::Put { key: "backup/last".into(), value: marker, expect: atoll_state::Expect::Any };
            let index = match self.consensus.write(put).await? {
                atoll_state::Response::Done { version } => version,
                r => return Err(ConsensusError::Raft(format!("marking the backup: {r:?}")).into()),
            };
            self.consensus
                .raft
                .wait(Some(Duration::from_secs(10)))
                .applied_index_at_least(Some(index), "the backup's marker applied here")
                .await
                .map_err(|e| ConsensusError::Raft(e.to_string()))?;
            let keyspace = self.consensus.reader.with(|k| k.clone());
            let ca = self.paths.ca();
            let read = |p: &Path| std::fs::read_to_string(p).map_err(io(p));
            let s = self.state();
            let b = Backup {
                island_id: s.island.id.clone(),
                island_name: s.island.name.clone(),
                created: unix_now(),
                keyspace,
                x509_key: read(&ca.join("x509.key"))?,
                nebula_ca_crt: read(&ca.join("nebula/ca.crt"))?,
                nebula_ca_key: read(&ca.join("nebula/ca.key"))?,
            };
            Ok(seal(&b, passphrase)?)
        }

        /// Rebuilds the island from a backup on this host, in no island: it becomes the CA
        /// host (its name, ID and mesh address), the only member and voter, with every
        /// document of the backup; the other members are removed (their certificates revoked)
        /// and join again with new invites. `public`, if given, replaces the CA host's public
        /// addresses (a replacement machine has its own; invites carry them).
        pub async fn restore(
            cfg: Config,
            sealed: &[u8],
            passphrase: &str,
            networks: &[(String, ipnet::Ipv4Net)],
            public: &[std::net::SocketAddr],
        ) -> Result<Arc<Self>, IslandError> {
            crate::manager::check_publics(public)?;
            let paths = Paths::new(&cfg.data_dir);
            if let Some(s) = FileStore::new(paths.state()).load()? {
                return Err(IslandError::AlreadyMember(s.island.name));
            }
            let b = open(sealed, passphrase)?;
            let doc = b.keyspace.get(ISLAND_KEY).ok_or_else(|| ConsensusError::Raft("the backup holds no island state".into()))?;
            let state: IslandState = serde_json::from_value(doc.value.clone()).map_err(ConsensusError::Decode)?;
            check_mesh_prefix(&cfg, state.island.mesh_cidr, networks)?;
            let _ = std::fs::remove_dir_all(&paths.root);
            let made = Self::restore_files(&cfg, &paths, &b, state, public).await;
            if let Err(e) = made {
                let _ = std::fs::remove_dir_all(&paths.root);
                return Err(e);
            }
            let m = Self::open(cfg).await?.ok_or(IslandError::NotMember)?;
            for (key, doc) in &b.keyspace.docs {
                if key != ISLAND_KEY {
                    let put = atoll_state::Request::Put { key: key.clone(), value: doc.value.clone(), expect: atoll_state::Expect::Any };
                    m.consensus.write(put).await?;
                }
            }
            tracing::info!(island = %b.island_name, backup = b.created, "restored the island from a backup");
            Ok(m)
        }

        async fn restore_files(
            cfg: &Config,
            paths: &Paths,
            b: &Backup,
            mut state: IslandState,
            public: &[std::net::SocketAddr],
        ) -> Result<(), IslandError> {
            for d in [paths.root.clone(), paths.ca(), paths.ca().join("nebula"), paths.generation(1)] {
                std::fs::create_dir_all(&d).map_err(io(&d))?;
            }
            write_secret(&paths.ca().join("x509.key"), b.x509_key.as_bytes())?;
            write_secret(&paths.ca().join("nebula/ca.crt"), b.nebula_ca_crt.as_bytes())?;
            write_secret(&paths.ca().join("nebula/ca.key"), b.nebula_ca_key.as_bytes())?;
            let authority = authority(cfg, paths, &state.island)?;
            if !public.is_empty() {
                state.apply(&Change::SetPublic { id: state.island.ca_host.clone(), public: public.to_vec() })?;
            }
            let me = state
                .members
                .get(&state.island.ca_host)
                .cloned()
                .ok_or_else(|| ConsensusError::Raft("the backup's state lists no CA host".into()))?;
            let now = unix_now();
            let others: Vec<String> = state.members.keys().filter(|id| **id != me.id).cloned().collect();
            for id in others {
                state.apply(&Change::Remove { id, now })?;
            }
            let serials: Vec<atoll_pki::Serial> = state.revoked_serials.keys().filter_map(|s| s.parse().ok()).collect();
            let t = SystemTime::now();
            state.apply(&Change::Crl { pem: authority.x509.crl(&serials, t, t + CA_LIFETIME)? })?;
            let issued = issue_own(&authority, paths, 1, &me.id, &me.name, me.mesh_ip, &state.island, &me.public, t).await?;
            state.apply(&Change::Renewed { id: me.id.clone(), issued, now })?;
            Local { node_id: me.id.clone(), generation: 1, removed: None, raft_group: false, raft_store: false }.save(paths)?;
            FileStore::new(paths.state()).save(&state)?;
            Ok(())
        }
    }
}
