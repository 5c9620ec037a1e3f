//! `atoll volume …`: thin calls to the volume routes.

use hyper::Method;

use atoll_api::client::Client;
use atoll_api::volumes::{PruneVolumesResponse, VolumeCreate, VolumeInfo};

use crate::output::table;

#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (or show the existing one of that name).
    Create {
        /// KEY=VALUE labels.
        #[arg(long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes and their data (no container may refer to them).
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove every volume no container refers to.
    Prune {
        /// Accepted for docker compatibility (prune never asks).
        #[arg(short, long)]
        force: bool,
    },
}

pub async fn run(client: &Client, cmd: VolumeCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        VolumeCommand::Create { labels, name } => {
            let labels = labels.iter().map(|l| l.split_once('=').unwrap_or((l, ""))).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            let v: VolumeInfo = client.json(Method::POST, "/v1/volumes", Some(&VolumeCreate { name, labels })).await?;
            println!("{}", v.volume.name);
        }
        VolumeCommand::Ls { json, quiet } => {
            let list: Vec<VolumeInfo> = client.json(Method::GET, "/v1/volumes", None::<&()>).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if quiet {
                list.iter().for_each(|v| println!("{}", v.volume.name));
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| {
                        let project = v.volume.labels.get(atoll_compose::plan::LABEL_PROJECT).cloned().unwrap_or_default();
                        vec![v.volume.name.clone(), project, v.used_by.join(", ")]
                    })
                    .collect();
                print!("{}", table(&["VOLUME NAME", "PROJECT", "USED BY"], &rows));
            }
        }
        VolumeCommand::Inspect { volumes } => {
            let mut out = Vec::new();
            for v in &volumes {
                out.push(client.json::<VolumeInfo>(Method::GET, &format!("/v1/volumes/{}", atoll_api::client::q(v)), None::<&()>).await?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm { volumes } => {
            let call = async |v: &str| {
                client.json::<VolumeInfo>(Method::DELETE, &format!("/v1/volumes/{}", atoll_api::client::q(v)), None::<&()>).await
            };
            return crate::cli::for_each(&volumes, call, |v, _| println!("{v}")).await;
        }
        VolumeCommand::Prune { force: _ } => {
            let r: PruneVolumesResponse = client.json(Method::POST, "/v1/volumes/prune", None::<&()>).await?;
            if !r.removed.is_empty() {
                println!("Deleted Volumes:");
                r.removed.iter().for_each(|v| println!("{v}"));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
