//! A member's life: `init` (the first member, holding both CAs), opening an island at daemon
//! start, starting its runtime (Nebula, the listeners, the loops), renewing its certificates,
//! and `leave`. Joining is in `join`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use tokio::sync::watch;

use crate::authority::Authority;
use crate::manager::{CA_LIFETIME, Config, IslandError, Manager, RenewStatus, StateView, Tls, io, unix_now};
use crate::model::{Change, IslandInfo, IslandState, Issued, Member, Role};
use crate::store::{FileStore, Local, Paths, StateStore};
use crate::transport;

/// What `atoll island recover` gives up.
const RECOVERY_WARNING: &str =
    "writes that only the lost voters had are gone; entries this host held but had not seen committed are now committed";

/// What `atoll island recover` did, or (`done` false: a dry run) would do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Recovery {
    /// Whether it was done (false: what it would do).
    pub done: bool,
    /// The voters the island went on without (names).
    pub lost: Vec<String>,
    /// The term and log index of the membership that made this host the only voter.
    pub term: u64,
    pub index: u64,
    /// How far this host had applied the log.
    pub applied: Option<u64>,
    /// What may have been lost.
    pub warning: String,
}

/// How long a re-synced member waits, caught up, before it votes again: twice the longest
/// election timeout.
const RESYNC_QUIET: Duration = Duration::from_secs(6);

/// `atoll init`'s options.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The island's name.
    pub name: String,
    /// This host's name.
    pub node_name: Option<String>,
    /// Public `ADDR:PORT`s (Nebula): this host is a lighthouse, relay and join endpoint.
    pub public: Vec<SocketAddr>,
    pub mesh_cidr: Ipv4Net,
    /// Where stack networks' subnets come from ([`crate::model::DEFAULT_STACK_POOL`] if none).
    pub stack_pool: Option<Ipv4Net>,
    /// The container networks of this host (name, subnet), which the mesh may not overlap.
    pub networks: Vec<(String, Ipv4Net)>,
}

impl InitOptions {
    /// The stack pool asked for, or the default.
    pub fn stack_pool(&self) -> Ipv4Net {
        self.stack_pool.unwrap_or_else(|| crate::model::DEFAULT_STACK_POOL.parse().expect("a valid prefix"))
    }
}

/// Writes `data` to `path` (0600, atomically).
pub(crate) fn write_secret(path: &Path, data: &[u8]) -> Result<(), IslandError> {
    atoll_util::atomic_write(path, data, 0o600).map_err(|e| IslandError::Io { path: path.to_owned(), source: std::io::Error::other(e) })
}

fn read(path: &Path) -> Result<String, IslandError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Manager {
    /// Creates an island with this host as its first member and CA host.
    pub async fn init(cfg: Config, opts: InitOptions) -> Result<Arc<Self>, IslandError> {
        let paths = Paths::new(&cfg.data_dir);
        if let Some(s) = FileStore::new(paths.state()).load()? {
            return Err(IslandError::AlreadyMember(s.island.name));
        }
        let name = opts.node_name.clone().unwrap_or_else(|| crate::manager::host_label(&cfg.hostname));
        if !crate::model::valid_host_name(&name) {
            return Err(crate::model::ModelError::BadName(name).into());
        }
        if !crate::model::valid_host_name(&opts.name) {
            return Err(crate::model::ModelError::BadName(opts.name.clone()).into());
        }
        check_mesh_prefix(&cfg, opts.mesh_cidr, &opts.networks)?;
        check_stack_pool(&cfg, opts.stack_pool(), opts.mesh_cidr, &opts.networks)?;
        // Everything is made in the island directory; on any failure it goes, whole.
        let _ = std::fs::remove_dir_all(&paths.root);
        let made = Self::init_files(&cfg, &paths, &opts, &name).await;
        match made {
            Ok(()) => Self::open(cfg).await?.ok_or(IslandError::NotMember),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&paths.root);
                Err(e)
            }
        }
    }

    async fn init_files(cfg: &Config, paths: &Paths, opts: &InitOptions, name: &str) -> Result<(), IslandError> {
        for d in [paths.root.clone(), paths.ca(), paths.ca().join("nebula"), paths.generation(1)] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let now = SystemTime::now();
        let ca = atoll_pki::Ca::generate(&opts.name, now, CA_LIFETIME)?;
        write_secret(&paths.ca().join("x509.key"), ca.key_pem().as_bytes())?;
        let nebula = atoll_mesh::NebulaCert { bin: cfg.nebula_cert.clone() };
        let (nca_crt, _nca_key) = nebula.ca(&opts.name, CA_LIFETIME, &paths.ca().join("nebula")).await?;
        let nebula_ca_cert = read(&nca_crt)?;
        let id = atoll_util::random_hex(8);
        let mesh_ip = crate::ipam::next_free(opts.mesh_cidr, &Default::default()).ok_or(IslandError::MeshPrefix(opts.mesh_cidr))?;
        let island = IslandInfo {
            id: atoll_util::random_hex(8),
            name: opts.name.clone(),
            created: unix_now(),
            mesh_cidr: opts.mesh_cidr,
            ca_cert: ca.cert_pem().to_owned(),
            ca_fingerprint: ca.fingerprint().to_string(),
            nebula_ca_cert,
            ca_host: id.clone(),
            mesh_port: cfg.mesh_port,
            control_port: cfg.control_port,
            cert_lifetime: cfg.cert_lifetime.as_secs(),
            stack_pool: opts.stack_pool(),
        };
        let authority = authority(cfg, paths, &island)?;
        let issued = issue_own(&authority, paths, 1, &id, name, mesh_ip, &island, &opts.public, now).await?;
        let founder = Member {
            id: id.clone(),
            name: name.to_owned(),
            mesh_ip,
            public: opts.public.clone(),
            role: if opts.public.is_empty() { Role::Member } else { Role::Lighthouse },
            labels: BTreeMap::new(),
            version: cfg.version.clone(),
            joined: unix_now(),
            certs: vec![issued],
            overlay_index: None,
        };
        let state = IslandState::new(island, founder);
        Local { node_id: id, generation: 1, removed: None, raft_group: false, raft_store: false }.save(paths)?;
        FileStore::new(paths.state()).save(&state)?;
        Ok(())
    }

    /// Opens the island this host is in, if any, and starts its runtime.
    pub async fn open(cfg: Config) -> Result<Option<Arc<Self>>, IslandError> {
        let paths = Paths::new(&cfg.data_dir);
        let store = FileStore::new(paths.state());
        let (Some(state), Some(mut local)) = (store.load()?, Local::load(&paths)?) else { return Ok(None) };
        let authority = if state.island.ca_host == local.node_id { Some(authority(&cfg, &paths, &state.island)?) } else { None };
        // Generations older than the current one are leftovers of a renewal.
        if let Ok(dir) = std::fs::read_dir(&paths.root) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(n) = name.strip_prefix("gen-").and_then(|n| n.parse::<u64>().ok())
                    && n != local.generation
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let placeholder = || Arc::new(RwLock::new(Arc::new(placeholder_server())));
        let client = transport::client(rustls_client_placeholder(), Duration::from_secs(10))?;
        let shared = Arc::new(RwLock::new(client.clone()));
        let consensus =
            open_consensus(&paths, crate::consensus::raft_id(&local.node_id), &state.island.id, shared.clone(), local.raft_store).await?;
        if !local.raft_store {
            local.raft_store = true;
            local.save(&paths)?;
        }
        // The replicated state, if this member has it and it is newer than the last one it saw.
        let state = match consensus.island()? {
            Some((s, _)) if s.version > state.version && s.island.id == state.island.id => s,
            _ => state,
        };
        consensus.name_members(&state);
        let (stop, _) = watch::channel(false);
        let m = Arc::new(Self {
            me: local.node_id.clone(),
            local: Mutex::new(local),
            state: watch::channel(state).0,
            cfg,
            paths,
            store,
            authority,
            tls: Tls {
                control: placeholder(),
                join: placeholder(),
                client: shared,
                long_client: RwLock::new(client.clone()),
                stream_client: RwLock::new(client),
            },
            mesh: tokio::sync::Mutex::new(None),
            seen: Mutex::new(BTreeMap::new()),
            write: tokio::sync::Mutex::new(()),
            stop,
            tasks: Mutex::new(Vec::new()),
            renewal: Mutex::new(RenewStatus::default()),
            reopen: Default::default(),
            pinged: Mutex::new(std::time::Instant::now()),
            consensus,
        });
        m.rebuild_tls()?;
        if let Err(e) = m.start().await {
            m.consensus.shutdown().await;
            return Err(e);
        }
        Ok(Some(m))
    }

    /// Rebuilds the TLS configurations from the current generation and the state's CRL.
    pub(crate) fn rebuild_tls(&self) -> Result<(), IslandError> {
        let state = self.state();
        let dir = self.generation_dir();
        let (cert, key) = (read(&dir.join("node.crt"))?, read(&dir.join("node.key"))?);
        let crls: Vec<String> = state.crl.iter().cloned().collect();
        let ca = &state.island.ca_cert;
        let control = atoll_pki::tls::server_config(ca, &cert, &key, &crls, true)?;
        *self.tls.control.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(control);
        if let Ok(join_cert) = std::fs::read_to_string(dir.join("join.crt")) {
            let join = atoll_pki::tls::server_config(ca, &join_cert, &key, &crls, false)?;
            *self.tls.join.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(join);
        }
        let client = atoll_pki::tls::client_config(ca, Some((&cert, &key)), &crls)?;
        *self.tls.client.write().unwrap_or_else(|p| p.into_inner()) = transport::client(client.clone(), Duration::from_secs(15))?;
        *self.tls.long_client.write().unwrap_or_else(|p| p.into_inner()) =
            transport::client(client.clone(), crate::proto::STATE_WAIT + Duration::from_secs(10))?;
        *self.tls.stream_client.write().unwrap_or_else(|p| p.into_inner()) = transport::stream_client(client)?;
        if let Ok(info) = atoll_pki::CertInfo::parse(&cert) {
            let mut r = self.renewal.lock().unwrap();
            r.not_after = Some(info.not_after);
            r.renew_at = Some(atoll_pki::renewal::renew_at_issued(info.not_before, info.not_after));
        }
        Ok(())
    }

    /// Nebula's configuration for the current state and generation (none for a state that
    /// does not list this host).
    pub(crate) fn mesh_config(&self) -> Option<atoll_mesh::MeshConfig> {
        let state = self.state();
        let dir = self.generation_dir();
        let me = state.members.get(&self.me)?;
        let pki = atoll_mesh::PkiPaths { ca: self.paths.nebula_ca_cert(), cert: dir.join("host.crt"), key: dir.join("host.key") };
        let mut c = atoll_mesh::MeshConfig::new(pki, me.mesh_ip);
        c.listen_port = state.island.mesh_port;
        c.control_port = state.island.control_port;
        c.lighthouses = state
            .lighthouses()
            .filter(|l| l.id != self.me)
            .map(|l| atoll_mesh::Lighthouse { mesh_ip: l.mesh_ip, public: l.public.iter().map(ToString::to_string).collect() })
            .collect();
        c.relays = state.lighthouses().filter(|l| l.id != self.me).map(|l| l.mesh_ip).collect();
        // A host with no lighthouse to ask (the founder of an island without a public member)
        // answers for itself.
        c.am_lighthouse = me.role == Role::Lighthouse || c.lighthouses.is_empty();
        c.am_relay = me.role == Role::Lighthouse;
        c.blocklist = state.revoked_nebula.keys().cloned().collect();
        // Stack networks' traffic between members: VXLAN, only over the mesh.
        c.extra_inbound.push(atoll_mesh::InboundRule {
            port: atoll_mesh::Port::One(crate::OVERLAY_PORT),
            proto: atoll_mesh::Proto::Udp,
            peer: atoll_mesh::Peer::AnyMember,
        });
        // Replicas' ports forwarded for the gateway on the public hosts.
        for proto in [atoll_mesh::Proto::Tcp, atoll_mesh::Proto::Udp] {
            c.extra_inbound.push(atoll_mesh::InboundRule {
                port: atoll_mesh::Port::Range(crate::FORWARD_PORTS.0, crate::FORWARD_PORTS.1),
                proto,
                peer: atoll_mesh::Peer::AnyMember,
            });
        }
        // Bundles' listeners, for the gateway on the public hosts.
        c.extra_inbound.push(atoll_mesh::InboundRule {
            port: atoll_mesh::Port::Range(crate::BUNDLE_PORTS.0, crate::BUNDLE_PORTS.1),
            proto: atoll_mesh::Proto::Tcp,
            peer: atoll_mesh::Peer::AnyMember,
        });
        Some(c)
    }

    /// Brings Nebula in line with the state (a reload, or a restart for what it reads only at
    /// start).
    pub(crate) async fn update_mesh(&self) -> Result<(), IslandError> {
        let ca = self.state().island.nebula_ca_cert;
        if std::fs::read_to_string(self.paths.nebula_ca_cert()).ok().as_deref() != Some(ca.as_str()) {
            write_secret(&self.paths.nebula_ca_cert(), ca.as_bytes())?;
        }
        let Some(config) = self.mesh_config() else { return Ok(()) };
        let mut mesh = self.mesh.lock().await;
        match mesh.as_ref() {
            Some(m) => {
                m.update(config).await?;
            }
            None => {
                let mut opts = atoll_mesh::SupervisorOptions::new(self.paths.nebula());
                opts.nebula = self.cfg.nebula.clone();
                opts.status_port = Some(self.cfg.status_port);
                *mesh = Some(atoll_mesh::Supervisor::start(opts, config).await?);
            }
        }
        Ok(())
    }

    /// Starts the mesh, the listeners and the loops.
    async fn start(self: &Arc<Self>) -> Result<(), IslandError> {
        self.update_mesh().await?;
        let state = self.state();
        let Some(me) = state.members.get(&self.me).cloned() else {
            // Saved by an older version after this host was removed: nothing to run.
            self.mark_removed("the saved state does not list this host");
            self.consensus.shutdown().await;
            return Ok(());
        };
        // A public member: one listener on every address, the mesh address getting the control
        // plane and the others only joins (a cloud VPS's public address may be NATed to a
        // private one it never sees). Any other member listens on its mesh address only.
        let port = state.island.control_port;
        let ip: std::net::IpAddr = if me.public.is_empty() { me.mesh_ip.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() };
        let listener = transport::bind(SocketAddr::new(ip, port))?;
        let sides = transport::Sides {
            mesh_ip: me.mesh_ip.into(),
            control: (self.tls.control.clone(), crate::routes::control(self.clone())),
            join: (!me.public.is_empty()).then(|| (self.tls.join.clone(), crate::routes::join(self.clone()))),
        };
        self.spawn(transport::serve_sides(listener, sides, self.stop.subscribe()));
        if self.removed() {
            tracing::warn!("this host was removed from the island: run `atoll leave`");
            self.consensus.shutdown().await;
            return Ok(());
        }
        self.start_raft(&me).await?;
        let m = self.clone();
        self.spawn(async move { m.follow_raft().await });
        if self.consensus.resyncing() {
            let m = self.clone();
            self.spawn(async move { m.finish_resync().await });
        }
        let m = self.clone();
        self.spawn(async move { m.reconcile_loop().await });
        let m = self.clone();
        self.spawn(async move { m.renew_loop().await });
        if !self.is_ca_host() {
            let m = self.clone();
            self.spawn(async move { m.follow_loop().await });
            let m = self.clone();
            self.spawn(async move { m.heartbeat_loop().await });
        }
        tracing::info!(island = %state.island.name, node = %me.name, mesh_ip = %me.mesh_ip, ca_host = self.is_ca_host(), "island up");
        Ok(())
    }

    /// The CA host starts the island's Raft group if it was never in one (a new island, or one
    /// made by a version without Raft), with itself as the only voter, and puts the island's
    /// state in it; the leader adds the other members. Anyone else waits to be added.
    async fn start_raft(&self, me: &Member) -> Result<(), IslandError> {
        if !self.is_ca_host() || self.local.lock().unwrap().raft_group {
            return Ok(());
        }
        let port = self.state().island.control_port;
        self.consensus.bootstrap(crate::consensus::address(me, port)).await?;
        if self.consensus.island()?.is_none() {
            let value = serde_json::to_value(self.state()).expect("the state serialises");
            let put = atoll_state::Request::Put { key: crate::consensus::ISLAND_KEY.into(), value, expect: atoll_state::Expect::Absent };
            self.consensus.write(put).await?;
            // A new island starts at this build's schema: its one member reads it.
            self.consensus.write(atoll_state::Request::Migrate { to: atoll_state::schema::SCHEMA }).await?;
        }
        let mut local = self.local.lock().unwrap();
        local.raft_group = true;
        local.save(&self.paths)?;
        Ok(())
    }

    /// [`Manager::recover_plan`] as a [`Recovery`] that was not done.
    pub async fn recover_dry_run(&self) -> Result<Recovery, IslandError> {
        let lost = self.recover_plan().await?;
        let warning = self.recovery_warning(&lost);
        Ok(Recovery { done: false, lost, term: 0, index: 0, applied: None, warning })
    }

    /// What a recovery without `lost` gives up: writes, and, if the CA host is among them,
    /// joins and renewals until it returns (found by QA: the dry run did not say so).
    fn recovery_warning(&self, lost: &[String]) -> String {
        let state = self.state();
        match state.members.get(&state.island.ca_host).filter(|ca| lost.contains(&ca.name)) {
            Some(ca) => format!(
                "{RECOVERY_WARNING}. The CA host ({}) is among the lost: until it returns, no host can join and no certificate is renewed (they expire); if it is gone for good, restore the island from a backup instead (`atoll island restore`)",
                ca.name
            ),
            None => RECOVERY_WARNING.into(),
        }
    }

    /// Goes on without the voters that are lost (`atoll island recover`): this member, a voter,
    /// becomes the only one, with what its replica holds, and Atoll grows the voters back
    /// from the members that are up. Refused while there is a leader, or while a majority of
    /// the voters answers (they will elect one). Returns what was done and the island, opened
    /// again on the recovered store.
    pub async fn recover(self: Arc<Self>) -> Result<(Recovery, Arc<Self>), IslandError> {
        let lost = self.recover_plan().await?;
        let warning = self.recovery_warning(&lost);
        let metrics = self.consensus.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let me = self.consensus.id;
        let nodes: BTreeMap<u64, openraft::BasicNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        tracing::warn!(lost = ?lost, "recovering the island without its lost voters");
        self.shutdown().await;
        // The mesh's watcher goes with its supervisor; Nebula keeps running and the island,
        // opened again, adopts it.
        drop(self.mesh.lock().await.take());
        let path = self.paths.raft();
        let forced = tokio::task::spawn_blocking(move || atoll_state::store::force_voters(&path, me, [me].into(), nodes))
            .await
            .map_err(|e| IslandError::Recover(format!("recovering: {e}")))?
            .map_err(crate::consensus::ConsensusError::from)?;
        let next = Self::open(self.cfg.clone()).await?.ok_or(IslandError::NotMember)?;
        let recovery = Recovery { done: true, lost, term: forced.term, index: forced.index, applied: forced.applied, warning };
        Ok((recovery, next))
    }

    /// What `recover` would do (the voters it would go on without), or why it may not.
    pub async fn recover_plan(&self) -> Result<Vec<String>, IslandError> {
        self.present()?;
        let metrics = self.consensus.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let me = self.consensus.id;
        let name = |id: u64| self.consensus.name(id);
        let voters: Vec<u64> = membership.voter_ids().collect();
        if !voters.contains(&me) {
            return Err(IslandError::Recover(format!(
                "this host does not vote: run `atoll island recover` on a voter that is up ({})",
                self.consensus.names_of(&voters)
            )));
        }
        if let Some(l) = self.consensus.leader() {
            return Err(IslandError::Recover(format!(
                "the island has a leader ({}): there is nothing to recover (if that host just went down, the others notice within a few seconds: ask again then)",
                name(l)
            )));
        }
        let client = self.client();
        let mut up = 1;
        for &v in voters.iter().filter(|&&v| v != me) {
            let Some(node) = membership.get_node(&v) else { continue };
            if crate::consensus::reconcile::answers(&client, &node.addr).await.is_some() {
                up += 1;
            }
        }
        if up * 2 > voters.len() {
            return Err(IslandError::Recover(format!(
                "{up} of {} voters answer, a majority: they will elect a leader; wait, and see `atoll island status`",
                voters.len()
            )));
        }
        Ok(voters.iter().filter(|&&v| v != me).map(|&v| name(v)).collect())
    }

    /// Ends a re-sync once this member has a leader, has applied everything it holds, and a
    /// few election timeouts have passed since (any election it voted in before its store was
    /// damaged is over): it votes and campaigns again.
    async fn finish_resync(self: Arc<Self>) {
        let mut metrics = self.consensus.raft.metrics();
        let mut caught_up_since: Option<std::time::Instant> = None;
        loop {
            let ready = {
                let m = metrics.borrow_and_update();
                m.current_leader.is_some_and(|l| l != self.consensus.id)
                    && m.last_applied.is_some()
                    && m.last_applied.map(|l| l.index) == m.last_log_index
            };
            caught_up_since = if ready { caught_up_since.or(Some(std::time::Instant::now())) } else { None };
            if caught_up_since.is_some_and(|t| t.elapsed() >= RESYNC_QUIET) {
                self.consensus.end_resync();
                let _ = std::fs::remove_file(self.paths.root.join("resync"));
                tracing::info!("re-synced after a damaged Raft store: this member votes again");
                return;
            }
            tokio::select! {
                _ = metrics.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Renews this host's certificates at two thirds of their life, retrying with backoff
    /// (never past expiry).
    async fn renew_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut attempt = 0u32;
        loop {
            let due = self.renewal.lock().unwrap().renew_at.unwrap_or_else(SystemTime::now);
            let wait = if attempt == 0 {
                // At most one renewal a second, whatever the certificates say.
                due.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_secs(1))
            } else {
                let left =
                    self.renewal.lock().unwrap().not_after.and_then(|t| t.duration_since(SystemTime::now()).ok()).unwrap_or_default();
                atoll_pki::renewal::retry_after(attempt, fastrand::f64()).min(left / 4).max(Duration::from_millis(200))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::transport::stopped(&mut stop) => return,
            }
            if self.removed() {
                return;
            }
            match self.renew().await {
                Ok(()) => {
                    attempt = 0;
                    self.renewal.lock().unwrap().error = None;
                }
                Err(IslandError::Transport(e)) if says_removed(&e) => {
                    self.mark_removed(&crate::proto::Problem::from_error(&e).to_string());
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    let chain = crate::proto::Problem::from_error(&e).to_string();
                    tracing::warn!(error = %chain, attempt, "renewing this host's certificates");
                    self.renewal.lock().unwrap().error = Some(chain);
                }
            }
        }
    }

    /// New keys, new certificates for them (from the CA host), a new generation, then the
    /// switch: TLS rebuilt, Nebula reloaded.
    pub(crate) async fn renew(&self) -> Result<(), IslandError> {
        let next = self.local.lock().unwrap().generation + 1;
        let dir = self.paths.generation(next);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let result = async {
            let key = atoll_pki::NodeKey::generate()?;
            write_secret(&dir.join("node.key"), key.key_pem().as_bytes())?;
            let nebula = atoll_mesh::NebulaCert { bin: self.cfg.nebula_cert.clone() };
            nebula.keygen(&dir.join("host.key"), &dir.join("host.pub")).await?;
            let req = crate::proto::RenewRequest { csr: key.csr_pem(&self.me)?, nebula_pub: read(&dir.join("host.pub"))? };
            let resp = match &self.authority {
                Some(_) => self.sign_renewal(&self.me, &req).await?,
                None => {
                    let url = self.ca_url(&self.state(), crate::proto::RENEW);
                    transport::post::<_, crate::proto::RenewResponse>(&self.client(), &url, &req).await?
                }
            };
            write_secret(&dir.join("node.crt"), resp.cert.as_bytes())?;
            write_secret(&dir.join("host.crt"), resp.nebula_cert.as_bytes())?;
            if let Some(j) = &resp.join_cert {
                write_secret(&dir.join("join.crt"), j.as_bytes())?;
            }
            Ok::<(), IslandError>(())
        }
        .await;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let old = {
            let mut local = self.local.lock().unwrap();
            let old = local.generation;
            Local { generation: next, ..local.clone() }.save(&self.paths)?;
            local.generation = next;
            old
        };
        self.rebuild_tls()?;
        self.update_mesh().await?;
        let _ = std::fs::remove_dir_all(self.paths.generation(old));
        tracing::info!(generation = next, "renewed this host's certificates");
        Ok(())
    }

    /// The CA host signs a renewal for member `id` and records it.
    pub(crate) async fn sign_renewal(
        &self,
        id: &str,
        req: &crate::proto::RenewRequest,
    ) -> Result<crate::proto::RenewResponse, IslandError> {
        let authority = self.authority.as_ref().expect("called on the CA host");
        let state = self.state();
        let m = state.members.get(id).ok_or_else(|| IslandError::UnknownNode(id.to_owned()))?;
        let lifetime = Duration::from_secs(state.island.cert_lifetime);
        let now = SystemTime::now();
        let signed = authority.sign(&m.id, &m.name, m.mesh_ip, state.island.mesh_cidr, &req.csr, &req.nebula_pub, lifetime, now).await?;
        let join_cert = if m.public.is_empty() {
            None
        } else {
            let ips: Vec<std::net::IpAddr> = m.public.iter().map(|p| p.ip()).collect();
            Some(authority.x509.sign_server(&req.csr, &ips, now, lifetime)?.cert_pem)
        };
        self.commit(&[Change::Renewed { id: m.id.clone(), issued: signed.issued.clone(), now: secs(now) }]).await?;
        Ok(crate::proto::RenewResponse { cert: signed.cert, nebula_cert: signed.nebula_cert, join_cert })
    }

    /// Follows the CA host's state with a long poll; a member that was away catches up at
    /// its first answer.
    async fn follow_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut failures = 0u32;
        loop {
            if self.removed() {
                return;
            }
            let state = self.state();
            let url = format!("{}?since={}", self.ca_url(&state, crate::proto::STATE), state.version);
            let client = self.tls.long_client.read().unwrap_or_else(|p| p.into_inner()).clone();
            let got = tokio::select! {
                r = transport::get::<StateView>(&client, &url) => r,
                _ = crate::transport::stopped(&mut stop) => return,
            };
            match got {
                Ok(view) => {
                    failures = 0;
                    self.adopt(view).await;
                }
                Err(e) if says_removed(&e) => {
                    self.mark_removed(&crate::proto::Problem::from_error(&e).to_string());
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(error = %crate::proto::Problem::from_error(&e), "following the island's state");
                    }
                    let pause = Duration::from_millis(250 * u64::from(failures.min(8)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = crate::transport::stopped(&mut stop) => return,
                    }
                }
            }
        }
    }

    /// Tells the CA host this member is alive, every `heartbeat`.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let beat = crate::proto::Heartbeat { version: self.cfg.version.clone() };
        loop {
            if self.removed() {
                return;
            }
            let url = self.ca_url(&self.state(), crate::proto::HEARTBEAT);
            match transport::post::<_, BTreeMap<String, i64>>(&self.client(), &url, &beat).await {
                // When the CA host last heard of every member: `node ls` here as fresh as there.
                Ok(seen) => {
                    let mut mine = self.seen.lock().unwrap();
                    for (id, t) in seen {
                        let e = mine.entry(id).or_insert(t);
                        *e = (*e).max(t);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.heartbeat) => {}
                _ = crate::transport::stopped(&mut stop) => return,
            }
        }
    }

    /// Leaves the island: tells the CA host (which revokes this host's certificates), stops
    /// the mesh and forgets the island. If the CA host cannot be reached (this host was removed,
    /// or the island is gone), it leaves anyway and says so.
    pub async fn leave(self: Arc<Self>) -> Result<Option<String>, IslandError> {
        if self.is_ca_host() && self.state().members.len() > 1 {
            return Err(crate::model::ModelError::CaHost.into());
        }
        // The loops stop first: none may take the state that no longer lists this host, or
        // renew what is being revoked.
        self.shutdown().await;
        let mut warning = None;
        if !self.is_ca_host() && !self.removed() {
            let url = self.ca_url(&self.state(), crate::proto::CHANGE);
            let req = crate::proto::ChangeRequest { change: Change::Remove { id: self.me.clone(), now: unix_now() } };
            match transport::post::<_, StateView>(&self.client(), &url, &req).await {
                Ok(_) => {}
                // Removed meanwhile: the island already forgot this host.
                Err(e) if says_removed(&e) => {}
                Err(e) => {
                    warning = Some(format!(
                        "the CA host was not told ({}); `atoll node rm` there removes this host",
                        crate::proto::Problem::from_error(&e)
                    ))
                }
            }
        }
        match self.mesh.lock().await.take() {
            Some(m) => m.stop().await?,
            // No supervisor (the state did not list this host): a Nebula may still run.
            None => atoll_mesh::stop_orphan(&self.paths.nebula()).await,
        }
        std::fs::remove_dir_all(&self.paths.root).map_err(io(&self.paths.root))?;
        Ok(warning)
    }
}

/// The marker of a Raft store from before a recovery of the island: the epoch to re-sync into.
pub(crate) const RESYNC_EPOCH: &str = "resync-epoch";

/// Opens this member's Raft node. A store that cannot be opened (damaged — a value failing its
/// checksum — truncated, not a store) is moved aside (`state.redb.damaged-<unix time>`), never served: the member starts
/// again from an empty store and re-syncs from the others, and until it has caught up (and a
/// few election timeouts have passed) it neither campaigns nor votes, since the votes it cast
/// were in the lost file (`<island>/resync` says so across restarts).
async fn open_consensus(
    paths: &Paths,
    id: u64,
    cluster: &str,
    client: crate::consensus::SharedClient,
    had_store: bool,
) -> Result<crate::consensus::Consensus, IslandError> {
    let path = paths.raft();
    let marker = paths.root.join("resync");
    // A store this member had, gone or emptied (found by QA: it voted again without the
    // votes it had cast): lost like a damaged one.
    let size = std::fs::metadata(&path).map(|m| m.len()).ok();
    if had_store && size.is_none_or(|s| s == 0) {
        if size.is_some() {
            let aside = path.with_extension(format!("redb.damaged-{}", unix_now()));
            std::fs::rename(&path, &aside).map_err(io(&path))?;
        }
        tracing::error!("this member's Raft store is missing or empty: re-syncing from the other members, not voting until caught up");
        write_secret(&marker, b"re-syncing after a lost Raft store: no votes until caught up\n")?;
    }
    // A store from before a recovery of the island (see `Manager::go_stale`): kept aside, and
    // an empty one in the island's epoch re-syncs, without votes until caught up.
    let stale = paths.root.join(RESYNC_EPOCH);
    if let Ok(text) = std::fs::read_to_string(&stale) {
        let epoch: u64 = text.trim().parse().map_err(|_| IslandError::Recover(format!("{} is not an epoch: {text:?}", stale.display())))?;
        if path.exists() {
            let aside = path.with_extension(format!("redb.before-recovery-{}", unix_now()));
            std::fs::rename(&path, &aside).map_err(io(&path))?;
            tracing::warn!(kept = %aside.display(), epoch, "re-syncing this member's Raft store from the recovered island");
        }
        atoll_state::store::set_epoch(&path, epoch).map_err(crate::consensus::ConsensusError::from)?;
        write_secret(&marker, b"re-syncing after a recovery of the island: no votes until caught up\n")?;
        std::fs::remove_file(&stale).map_err(io(&stale))?;
    }
    let c = match crate::consensus::Consensus::open(&path, id, cluster, client.clone()).await {
        Ok(c) => c,
        // A state newer than this build is whole: keep it, and say to upgrade.
        Err(crate::consensus::ConsensusError::Store(e)) if path.exists() && !matches!(e, atoll_state::store::StoreError::TooNew { .. }) => {
            let aside = path.with_extension(format!("redb.damaged-{}", unix_now()));
            tracing::error!(
                error = %crate::proto::Problem::from_error(&e),
                moved_to = %aside.display(),
                "this member's Raft store is damaged: moved aside; re-syncing from the other members, not voting until caught up"
            );
            std::fs::rename(&path, &aside).map_err(io(&path))?;
            write_secret(&marker, b"re-syncing after a damaged Raft store: no votes until caught up\n")?;
            crate::consensus::Consensus::open(&path, id, cluster, client).await?
        }
        Err(e) => return Err(e.into()),
    };
    if marker.exists() {
        c.start_resync();
    }
    Ok(c)
}

/// Whether the CA host's answer means this host is no longer a member: it refused it as a
/// non-member (403), or refused its certificate as revoked during the TLS handshake.
pub(crate) fn says_removed(e: &transport::TransportError) -> bool {
    match e {
        transport::TransportError::Refused { status: 403, .. } => true,
        e => connect_error_mentions(e, "CertificateRevoked"),
    }
}

/// Whether a connection failed for a reason whose debug form names `what` (a TLS alert or
/// certificate error, which reqwest only carries deep in its chain).
pub(crate) fn connect_error_mentions(e: &transport::TransportError, what: &str) -> bool {
    let transport::TransportError::Connect { source, .. } = e else { return false };
    let mut cause: Option<&dyn std::error::Error> = Some(source);
    while let Some(c) = cause {
        if format!("{c:?}").contains(what) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The CA host's authority, from the island directory.
pub(crate) fn authority(cfg: &Config, paths: &Paths, island: &IslandInfo) -> Result<Authority, IslandError> {
    let key = read(&paths.ca().join("x509.key"))?;
    Ok(Authority {
        x509: atoll_pki::Ca::from_pem(&island.ca_cert, &key)?,
        nebula_ca_cert: paths.ca().join("nebula/ca.crt"),
        nebula_ca_key: paths.ca().join("nebula/ca.key"),
        nebula: atoll_mesh::NebulaCert { bin: cfg.nebula_cert.clone() },
        scratch: paths.scratch(),
    })
}

/// The CA host signs its own generation `gen` (init).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn issue_own(
    authority: &Authority,
    paths: &Paths,
    gen_no: u64,
    id: &str,
    name: &str,
    mesh_ip: std::net::Ipv4Addr,
    island: &IslandInfo,
    public: &[SocketAddr],
    now: SystemTime,
) -> Result<Issued, IslandError> {
    let dir = paths.generation(gen_no);
    let key = atoll_pki::NodeKey::generate()?;
    write_secret(&dir.join("node.key"), key.key_pem().as_bytes())?;
    authority.nebula.keygen(&dir.join("host.key"), &dir.join("host.pub")).await?;
    let lifetime = Duration::from_secs(island.cert_lifetime);
    let csr = key.csr_pem(id)?;
    let signed =
        authority.sign(&id.to_owned(), name, mesh_ip, island.mesh_cidr, &csr, &read(&dir.join("host.pub"))?, lifetime, now).await?;
    write_secret(&dir.join("node.crt"), signed.cert.as_bytes())?;
    write_secret(&dir.join("host.crt"), signed.nebula_cert.as_bytes())?;
    if !public.is_empty() {
        let ips: Vec<std::net::IpAddr> = public.iter().map(|p| p.ip()).collect();
        write_secret(&dir.join("join.crt"), authority.x509.sign_server(&csr, &ips, now, lifetime)?.cert_pem.as_bytes())?;
    }
    Ok(signed.issued)
}

/// Refuses a mesh prefix that overlaps a special range, the container pool, a container
/// network (`networks`: name and subnet), or anything the host routes or has an address in.
pub(crate) fn check_mesh_prefix(cfg: &Config, mesh: Ipv4Net, networks: &[(String, Ipv4Net)]) -> Result<(), IslandError> {
    if !crate::ipam::usable_mesh_prefix(&mesh) {
        return Err(IslandError::MeshPrefix(mesh));
    }
    match crate::ipam::mesh_conflict(&mesh, &cfg.container_pool, networks, &atoll_util::host_prefixes4()) {
        Some((what, other)) => Err(IslandError::Overlap { mesh, what, other }),
        None => Ok(()),
    }
}

/// Refuses a stack pool that overlaps what a mesh prefix may not, or the mesh itself, or that
/// cannot hold a member's slice.
pub(crate) fn check_stack_pool(cfg: &Config, pool: Ipv4Net, mesh: Ipv4Net, networks: &[(String, Ipv4Net)]) -> Result<(), IslandError> {
    if !(8..=crate::model::STACK_NETWORK_PREFIX).contains(&pool.prefix_len()) {
        return Err(IslandError::StackPool(pool));
    }
    if crate::ipam::overlaps(&pool, &mesh) {
        return Err(IslandError::StackPoolOverlap { pool, what: "the mesh".into(), other: mesh });
    }
    match crate::ipam::mesh_conflict(&pool, &cfg.container_pool, networks, &atoll_util::host_prefixes4()) {
        Some((what, other)) => Err(IslandError::StackPoolOverlap { pool, what, other }),
        None => Ok(()),
    }
}

/// A server config used until the real one is built (never served: `open` rebuilds at once).
fn placeholder_server() -> rustls::ServerConfig {
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS 1.3 is supported")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCert))
}

#[derive(Debug)]
struct NoCert;

impl rustls::server::ResolvesServerCert for NoCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

fn rustls_client_placeholder() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore::empty();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS 1.3 is supported")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
