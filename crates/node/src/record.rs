//! What the engine knows about a container, persisted as `containers/<id>/container.json`.

use serde::{Deserialize, Serialize};

use atoll_spec::{ContainerSpec, HealthTracker};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Made but never started (or its start failed).
    Created,
    Running,
    /// Exited; the restart policy will start it again after a backoff.
    Restarting,
    Exited,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub spec: ContainerSpec,
    /// The image as the user named it.
    pub image: String,
    /// The image ID (config digest) it was created from.
    pub image_id: String,
    /// diff_ids of the image's layers, bottom first: the container keeps them alive.
    pub layers: Vec<String>,
    pub created: String,
    pub state: State,
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    /// The exit was not observed (the shim died, or the host rebooted).
    #[serde(default)]
    pub exit_unknown: bool,
    pub restart_count: u32,
    /// The last run ended with the OOM killer killing a process of it.
    #[serde(default)]
    pub oom_killed: bool,
    /// `stop` or `kill` ended it: restart policies leave it alone.
    pub stopped_by_user: bool,
    pub health: Option<HealthTracker>,
    /// The kernel boot the container was started in (a different one means a reboot).
    pub boot_id: Option<String>,
    /// Why the last start failed.
    pub error: Option<String>,
    /// Its places on bridge networks (addresses allocated at create, freed at remove).
    #[serde(default)]
    pub endpoints: Vec<atoll_net::Endpoint>,
    /// Its published ports, host ports resolved.
    #[serde(default)]
    pub ports: Vec<atoll_net::PublishedPort>,
    /// The program the container runs, and its arguments: the image's Entrypoint and Cmd
    /// combined with the spec's by docker's rules (docker's `Path` and `Args`), fixed at create.
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
}

impl ContainerRecord {
    pub fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// The command line it runs, as `ps` shows it: `path args…` joined by spaces.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.path).chain(&self.args).filter(|w| !w.is_empty()).cloned().collect::<Vec<_>>().join(" ")
    }

    /// `Up 5 minutes (healthy)`, `Exited (1) 2 seconds ago`, as `ps` shows.
    pub fn status_text(&self, now: time::OffsetDateTime) -> String {
        let ago = |t: &Option<String>| t.as_deref().and_then(parse_time).map(|t| human_duration((now - t).whole_seconds().max(0) as u64));
        match self.state {
            State::Running => {
                let health = self.health.as_ref().map(|h| format!(" ({})", h.status)).unwrap_or_default();
                format!("Up {}{health}", ago(&self.started_at).unwrap_or_else(|| "?".into()))
            }
            State::Restarting => format!("Restarting ({}) {} ago", self.exit_code.unwrap_or(0), ago(&self.finished_at).unwrap_or_default()),
            State::Exited => format!("Exited ({}) {} ago", self.exit_code.unwrap_or(0), ago(&self.finished_at).unwrap_or_default()),
            State::Created => "Created".into(),
        }
    }
}

pub fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1..=59 => format!("{secs} second{}", if secs == 1 { "" } else { "s" }),
        60..=3599 => plural(secs / 60, "minute"),
        3600..=86_399 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 { format!("About a{} {unit}", if unit == "hour" { "n" } else { "" }) } else { format!("{n} {unit}s") }
}
