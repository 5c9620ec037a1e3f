//! Invites and joins. [`Manager::invite`] records an invite (its secret hashed) and prints
//! its code; [`Manager::join`] is the joining host's side: keys made here (kept across an
//! interrupted attempt, so running it again is the same join), the secret proved over TLS
//! pinned to the CA fingerprint the code carries, certificates and the island's state received,
//! the mesh started.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::invite::InviteCode;
use crate::lifecycle::write_secret;
use crate::manager::{Config, IslandError, Manager, io, unix_now};
use crate::model::{Change, Invite, ModelError};
use crate::proto::{JoinRequest, JoinResponse};
use crate::store::{FileStore, Local, Paths, StateStore};
use crate::transport;

/// `atoll invite`'s options.
#[derive(Debug, Clone, Default)]
pub struct InviteOptions {
    /// The name the joining host takes (unless it gives one).
    pub name: Option<String>,
    pub expires: Duration,
    /// The joining host is public.
    pub public: bool,
}

/// `atoll join`'s options.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    pub name: Option<String>,
    pub public: Vec<SocketAddr>,
    /// The container networks of this host (name, subnet), which the mesh may not overlap.
    pub networks: Vec<(String, ipnet::Ipv4Net)>,
}

/// A pending invite as `invite ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct InviteView {
    pub id: String,
    pub name: Option<String>,
    pub public: bool,
    pub created: String,
    pub expires: String,
    pub expired: bool,
}

/// A new invite and its code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NewInvite {
    pub code: String,
    pub invite: InviteView,
}

fn view(i: &Invite) -> InviteView {
    InviteView {
        id: i.id.clone(),
        name: i.name.clone(),
        public: i.public,
        created: crate::model::rfc3339(i.created),
        expires: crate::model::rfc3339(i.expires),
        expired: unix_now() >= i.expires,
    }
}

impl Manager {
    /// Creates an invite; its code is only ever shown here.
    pub async fn invite(&self, opts: InviteOptions) -> Result<NewInvite, IslandError> {
        let state = self.state();
        let endpoints: Vec<SocketAddr> =
            state.lighthouses().flat_map(|l| l.public.iter().map(|p| SocketAddr::new(p.ip(), state.island.control_port))).collect();
        if endpoints.is_empty() {
            return Err(IslandError::NoPublicMember);
        }
        let secret = crate::invite::new_secret();
        let now = unix_now();
        let invite = Invite {
            id: atoll_util::random_hex(8),
            secret_sha256: crate::model::sha256_hex(secret.as_bytes()),
            name: opts.name.clone(),
            public: opts.public,
            created: now,
            expires: now + opts.expires.as_secs() as i64,
            used_by: None,
        };
        self.change(Change::CreateInvite { invite: invite.clone() }).await?;
        let code = InviteCode {
            island: state.island.name.clone(),
            island_id: state.island.id.clone(),
            ca_fingerprint: state.island.ca_fingerprint.clone(),
            endpoints,
            invite_id: invite.id.clone(),
            secret,
            expires: invite.expires,
            name: opts.name,
            public: opts.public,
            mesh_cidr: Some(state.island.mesh_cidr),
        };
        Ok(NewInvite { code: code.encode(), invite: view(&invite) })
    }

    /// Invites not used yet (expired ones too, marked).
    pub fn invites(&self) -> Vec<InviteView> {
        self.state().invites.values().filter(|i| i.used_by.is_none()).map(view).collect()
    }

    pub async fn delete_invite(&self, id: &str) -> Result<(), IslandError> {
        let state = self.state();
        let id = state
            .invites
            .keys()
            .find(|k| *k == id || (id.len() >= 4 && k.starts_with(id)))
            .cloned()
            .ok_or_else(|| ModelError::InviteUnknown(id.to_owned()))?;
        self.change(Change::DeleteInvite { id }).await?;
        Ok(())
    }

    /// Removes the keys of a join that did not finish (a host in no island); whether there were.
    pub fn forget_unfinished_join(cfg: &Config) -> bool {
        let paths = Paths::new(&cfg.data_dir);
        if paths.state().exists() || !paths.joining().exists() {
            return false;
        }
        std::fs::remove_dir_all(&paths.root).is_ok()
    }

    /// Joins the island of `code`.
    pub async fn join(cfg: Config, code: &str, opts: JoinOptions) -> Result<Arc<Self>, IslandError> {
        let paths = Paths::new(&cfg.data_dir);
        if let Some(s) = FileStore::new(paths.state()).load()? {
            return Err(IslandError::AlreadyMember(s.island.name));
        }
        let code = InviteCode::decode(code)?;
        if unix_now() >= code.expires {
            return Err(ModelError::InviteExpired(crate::model::rfc3339(code.expires)).into());
        }
        if code.public && opts.public.is_empty() {
            return Err(IslandError::PublicInvite);
        }
        if !code.public && !opts.public.is_empty() {
            return Err(IslandError::NotPublicInvite);
        }
        crate::manager::check_publics(&opts.public)?;
        let check_mesh = |mesh: ipnet::Ipv4Net| match crate::ipam::mesh_conflict(
            &mesh,
            &cfg.container_pool,
            &opts.networks,
            &atoll_util::host_prefixes4(),
        ) {
            Some((what, other)) => Err(IslandError::JoinOverlap { mesh, what, other }),
            None => Ok(()),
        };
        if let Some(mesh) = code.mesh_cidr {
            check_mesh(mesh)?;
        }
        let name = opts.name.clone().or_else(|| code.name.clone()).unwrap_or_else(|| crate::manager::host_label(&cfg.hostname));
        if !crate::model::valid_host_name(&name) {
            return Err(ModelError::BadName(name).into());
        }
        let keys = joining_keys(&cfg, &paths, &code.invite_id).await?;
        let nebula_pub = std::fs::read_to_string(keys.join("host.pub")).map_err(io(&keys.join("host.pub")))?;
        let node_key = atoll_pki::NodeKey::from_pem(&std::fs::read_to_string(keys.join("node.key")).map_err(io(&keys.join("node.key")))?)?;
        let req = JoinRequest {
            invite_id: code.invite_id.clone(),
            secret: code.secret.clone(),
            name,
            public: opts.public.clone(),
            csr: node_key.csr_pem("joining")?,
            nebula_pub,
            version: cfg.version.clone(),
            schema_reads: atoll_state::schema::SCHEMA,
        };
        let fp: atoll_pki::Fingerprint =
            code.ca_fingerprint.parse().map_err(|_| crate::invite::CodeError::Malformed("its CA fingerprint".into()))?;
        let client = transport::client(atoll_pki::tls::pinned_client_config(fp)?, Duration::from_secs(30))?;
        // Each endpoint in turn: a refusal is final (it came from the island), a connection
        // failure tries the next, and so does a 5xx: a member that forwards joins to the CA
        // host may not reach it yet (its mesh still coming up), where the next endpoint can.
        let mut last = None;
        let mut resp: Option<JoinResponse> = None;
        for e in &code.endpoints {
            let url = format!("https://{e}{}", crate::proto::JOIN);
            match transport::post::<_, JoinResponse>(&client, &url, &req).await {
                Ok(r) => {
                    resp = Some(r);
                    break;
                }
                // The pinned CA did not sign the endpoint's certificate.
                Err(err) if crate::lifecycle::connect_error_mentions(&err, "InvalidCertificate") => {
                    let _ = std::fs::remove_dir_all(&paths.root);
                    return Err(IslandError::Mismatch(format!(
                        "{e}'s certificate is not from the island CA the code names: the code was altered, or that address is no longer the island's"
                    )));
                }
                Err(err @ transport::TransportError::Refused { status: ..500, .. }) => {
                    // Refused for good: the keys made for it go (no state was written).
                    let _ = std::fs::remove_dir_all(&paths.root);
                    return Err(err.into());
                }
                Err(err) => last = Some(err),
            }
        }
        let resp = match resp {
            Some(r) => r,
            None => return Err(last.expect("the code names an endpoint").into()),
        };
        if resp.state.island.ca_fingerprint != code.ca_fingerprint {
            return Err(IslandError::Mismatch("the island's CA is not the one the code names".into()));
        }
        if resp.state.island.id != code.island_id {
            return Err(IslandError::Mismatch(format!(
                "the island is {}, not the {} the code names",
                resp.state.island.id, code.island_id
            )));
        }
        // A code of an older version carries no mesh prefix: checked now, before this host
        // takes the membership (the island's `node rm` forgets it).
        if code.mesh_cidr.is_none() {
            check_mesh(resp.state.island.mesh_cidr)?;
        }
        let info = atoll_pki::CertInfo::parse(&resp.cert)?;
        if info.node_id.as_deref() != Some(resp.node_id.as_str()) {
            return Err(IslandError::Mismatch(format!("the certificate names {:?}, not {}", info.node_id, resp.node_id)));
        }
        // Generation 1 from the joining keys, then the state: the host is a member from here.
        let dir = paths.generation(1);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&keys, &dir).map_err(io(&dir))?;
        write_secret(&dir.join("node.crt"), resp.cert.as_bytes())?;
        write_secret(&dir.join("host.crt"), resp.nebula_cert.as_bytes())?;
        if let Some(j) = &resp.join_cert {
            write_secret(&dir.join("join.crt"), j.as_bytes())?;
        }
        Local { node_id: resp.node_id.clone(), generation: 1, removed: None, raft_group: false, raft_store: false }.save(&paths)?;
        FileStore::new(paths.state()).save(&resp.state)?;
        if resp.epoch > 0 {
            atoll_state::store::set_epoch(&paths.raft(), resp.epoch).map_err(crate::consensus::ConsensusError::from)?;
        }
        Self::open(cfg).await?.ok_or(IslandError::NotMember)
    }
}

/// The keys of a join with invite `invite_id`: the ones already made for it, or new ones.
async fn joining_keys(cfg: &Config, paths: &Paths, invite_id: &str) -> Result<std::path::PathBuf, IslandError> {
    let dir = paths.joining();
    let marker = dir.join("invite");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(invite_id) && dir.join("host.pub").exists() && dir.join("node.key").exists()
    {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_secret(&dir.join("node.key"), atoll_pki::NodeKey::generate()?.key_pem().as_bytes())?;
    atoll_mesh::NebulaCert { bin: cfg.nebula_cert.clone() }.keygen(&dir.join("host.key"), &dir.join("host.pub")).await?;
    write_secret(&marker, invite_id.as_bytes())?;
    Ok(dir)
}
