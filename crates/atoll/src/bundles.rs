//! `atoll bundle …`: publish a bundle to one's own PDS (this process talks to the PDS
//! directly), and allow, run, list, inspect and remove bundles on this host (through the
//! daemon).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;

use atoll_api::bundles::{AllowRequest, RunRequest, RunnerKey};
use atoll_api::client::{Client, q};
use atoll_bundles::secrets::{parse_arg, seal};
use atoll_bundles::{Allowed, BundleView};

use crate::output::{listing, print_json};

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Publish the bundle in DIR (`bundle.json` and its code) to your PDS; prints its at:// URI.
    Publish {
        dir: PathBuf,
        /// Your PDS (`https://bsky.social`, or your own).
        #[arg(long, value_name = "URL")]
        pds: String,
        /// Your handle or DID.
        #[arg(long, value_name = "HANDLE")]
        identifier: String,
        /// Read the app password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// For a local PDS only (`scripts/dev-pds.sh`): allow a plain-http PDS on this port.
        #[arg(long, value_name = "PORT")]
        insecure_http_port: Option<u16>,
    },
    /// Run bundles by an author (a DID, or a handle checked both ways) on this host (on its
    /// island, on a member).
    Allow {
        who: Option<String>,
        /// Instead: run bundles by every account HANDLE follows (its `app.bsky.graph.follow`
        /// records, read again when a bundle is run or updated).
        #[arg(long, value_name = "HANDLE", conflicts_with_all = ["who", "list"])]
        follows_of: Option<String>,
        /// List the authors allowed.
        #[arg(long, conflicts_with = "who")]
        list: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop allowing an author (its bundles running here keep running).
    Disallow { who: String },
    /// Fetch the bundle at AT-URI from its author's PDS and run it here.
    Run {
        uri: String,
        /// The name it runs under here [default: its manifest's].
        #[arg(long)]
        name: Option<String>,
        /// A secret the bundle declares: `KEY=VALUE` or `KEY=@FILE`; sealed to this host's key
        /// before it leaves this process (repeatable).
        #[arg(long = "secret", value_name = "KEY=VALUE|KEY=@FILE")]
        secrets: Vec<String>,
        /// A value for an env name the bundle declares (`permissions.env`), as docker's
        /// `--env`: `KEY=VALUE` (repeatable; not secret: `inspect` shows the names).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Instances kept warm; 0 lets it scale to zero when idle (the daemon's
        /// --bundle-idle-timeout) and start again on its next request.
        #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
        min_instances: u32,
        /// The most instances under load, for oci and deno bundles: another starts when every
        /// one is at the manifest's limits.maxConcurrent, and those beyond --min-instances stop
        /// when idle [default: --min-instances, at least 1].
        #[arg(long, value_name = "M", default_value_t = 0, hide_default_value = true, value_parser = clap::value_parser!(u32).range(0..=16))]
        max_instances: u32,
        /// Print the bundle as JSON (as `inspect --json`).
        #[arg(long)]
        json: bool,
    },
    /// Print this host's public key, which bundle authors seal secrets to.
    Key {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Seal secrets to a host's key, for the `secrets` of a bundle.json (prints them as JSON).
    Seal {
        /// The host's key (`atoll bundle key` on it).
        #[arg(long, value_name = "KEY")]
        recipient: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY=@FILE")]
        secrets: Vec<String>,
    },
    /// List the bundles this host runs.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One bundle: its source, version, routes and where they answer.
    Inspect {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A bundle's log: its requests (with their IDs, statuses and times), denials, cron runs
    /// and instance starts.
    Logs {
        name: String,
        /// Go on with new entries as they come.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N entries.
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<usize>,
        /// Print the entries as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Stop bundles and forget them.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `--secret` arguments, files read here.
fn read_secrets(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    args.iter().map(|a| parse_arg(a, |f| std::fs::read_to_string(f)).map_err(anyhow::Error::msg)).collect()
}

fn text(b: &BundleView) -> String {
    let mut out = format!(
        "Name:     {}\nSource:   {}\nAuthor:   {}{}\nVersion:  {}\nRuntime:  {}\nState:    {}\nURL:      {}\nCode:     {}\nRoutes:\n",
        b.name,
        b.uri,
        b.did,
        b.handle.as_ref().map(|h| format!(" ({h})")).unwrap_or_default(),
        b.version,
        b.runtime,
        b.state,
        b.url.as_deref().unwrap_or("-"),
        b.code_cid.as_deref().unwrap_or("-"),
    );
    for r in &b.routes {
        out.push_str(&format!("  {r}\n"));
    }
    if let Some(node) = &b.node {
        out.push_str(&format!("Node:     {node}\n"));
    }
    if !b.public_urls.is_empty() {
        out.push_str(&format!("Public:   {}\n", b.public_urls.join(", ")));
    }
    if !b.failed_on.is_empty() {
        out.push_str(&format!("Failed:   on {} (avoided while another member is up)\n", b.failed_on.join(", ")));
    }
    if !b.secrets.is_empty() {
        out.push_str(&format!("Secrets:  {}\n", b.secrets.join(", ")));
    }
    let p = &b.permissions;
    for (what, list) in [("Net", &p.net), ("Read", &p.read), ("Write", &p.write), ("Env", &p.env)] {
        if !list.is_empty() {
            out.push_str(&format!("{:<10}{}\n", format!("{what}:"), list.join(", ")));
        }
    }
    if let Some(why) = &b.update_held {
        out.push_str(&format!("Update:   {why}\n"));
    }
    out
}

pub async fn bundle(client: &Client, cmd: BundleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCommand::Publish { dir, pds, identifier, password_stdin: _, insecure_http_port } => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password).context("reading the app password from standard input")?;
            if password.trim().is_empty() {
                anyhow::bail!(
                    "no app password on standard input: --password-stdin reads it from there (`echo $APP_PASSWORD | atoll bundle publish …`)"
                );
            }
            let bundle = atoll_runner::dir::read(&dir).with_context(|| format!("reading the bundle in {}", dir.display()))?;
            let config = atoll_atproto::Config { insecure_http_port, ..Default::default() };
            let at = atoll_atproto::Client::new(config).context("setting up the ATProto client")?;
            let session = at
                .create_session(&pds, &identifier, password.trim())
                .await
                .with_context(|| format!("logging in to {pds} as {identifier}"))?;
            let code = bundle.code.as_ref().map(|(b, mime)| (b.clone(), *mime));
            let (uri, cid) = at.publish_bundle(&session, &bundle.manifest, code).await.context("publishing the bundle")?;
            eprintln!("Published {} {} (record {cid})", bundle.manifest.name, bundle.manifest.version);
            println!("{uri}");
        }
        BundleCommand::Allow { who, follows_of, list: false, json } if who.is_some() || follows_of.is_some() => {
            let req = AllowRequest { follows_of: follows_of.is_some(), who: who.or(follows_of).unwrap_or_default() };
            let a: Allowed = client.json(Method::POST, "/v1/bundle-authors", Some(&req)).await?;
            if json {
                print_json(&a)?;
            } else {
                let whose = if a.follows_of { "the accounts followed by " } else { "" };
                println!("Allowed {whose}{}{}", a.did, a.handle.map(|h| format!(" ({h})")).unwrap_or_default());
            }
        }
        BundleCommand::Allow { json, .. } => {
            let row = |a: &Allowed| {
                vec![
                    a.did.clone(),
                    a.handle.clone().unwrap_or_else(|| "-".into()),
                    if a.follows_of { "accounts it follows" } else { "itself" }.to_owned(),
                ]
            };
            listing(client, "/v1/bundle-authors", json, &["DID", "HANDLE", "ALLOWS"], row).await?;
        }
        BundleCommand::Disallow { who } => {
            client.call(Method::DELETE, &format!("/v1/bundle-authors/{}", q(&who)), None::<&()>).await?;
            println!("Disallowed {who}");
        }
        BundleCommand::Run { uri, name, secrets, env, min_instances, max_instances, json } => {
            let env = env
                .iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                    _ => Err(anyhow::anyhow!("--env {e:?}: give KEY=VALUE")),
                })
                .collect::<anyhow::Result<std::collections::BTreeMap<_, _>>>()?;
            let mut sealed = std::collections::BTreeMap::new();
            if !secrets.is_empty() {
                let key: RunnerKey = client.json(Method::GET, "/v1/bundle-key", None::<&()>).await?;
                for (k, v) in read_secrets(&secrets)? {
                    let s = seal(&key.public_key, &v).map_err(anyhow::Error::msg)?;
                    sealed.insert(k, s.ciphertext);
                }
            }
            let b: BundleView = client
                .json(Method::POST, "/v1/bundles", Some(&RunRequest { uri, name, secrets: sealed, min_instances, max_instances, env }))
                .await?;
            if json { print_json(&b)? } else { print!("{}", text(&b)) }
        }
        BundleCommand::Key { json } => {
            let key: RunnerKey = client.json(Method::GET, "/v1/bundle-key", None::<&()>).await?;
            if json { print_json(&key)? } else { println!("{}", key.public_key) }
        }
        BundleCommand::Seal { recipient, secrets } => {
            let mut out = Vec::new();
            for (k, v) in read_secrets(&secrets)? {
                let s = seal(&recipient, &v).map_err(anyhow::Error::msg)?;
                out.push(serde_json::json!({"name": k, "sealed": [s]}));
            }
            print_json(&out)?;
        }
        BundleCommand::Ls { json } => {
            let row = |b: &BundleView| {
                vec![
                    b.name.clone(),
                    b.version.clone(),
                    b.runtime.clone(),
                    b.handle.clone().unwrap_or_else(|| b.did.clone()),
                    b.state.clone(),
                    b.node.clone().unwrap_or_else(|| "-".into()),
                    // On an island, where the gateway serves it; else where it answers here.
                    b.public_urls.first().cloned().or_else(|| b.url.clone()).unwrap_or_default(),
                ]
            };
            listing(client, "/v1/bundles", json, &["NAME", "VERSION", "RUNTIME", "AUTHOR", "STATE", "NODE", "URL"], row).await?;
        }
        BundleCommand::Inspect { name, json } => {
            let b: BundleView = client.json(Method::GET, &format!("/v1/bundles/{}", q(&name)), None::<&()>).await?;
            if json { print_json(&b)? } else { print!("{}", text(&b)) }
        }
        BundleCommand::Logs { name, follow, tail, json } => {
            let mut url = format!("/v1/bundles/{}/logs?follow={follow}", q(&name));
            if let Some(n) = tail {
                url.push_str(&format!("&tail={n}"));
            }
            let resp = client.send_ok(Method::GET, &url, None, atoll_api::client::empty()).await?;
            crate::containers::each_line::<atoll_bundles::journal::Entry>(resp.into_body(), |e| {
                if json {
                    println!("{}", serde_json::to_string(&e).unwrap_or_default());
                    return;
                }
                let status = e.status.map(|s| format!(" {s}")).unwrap_or_default();
                let ms = e.ms.map(|m| format!(" {m}ms")).unwrap_or_default();
                let id = e.request_id.map(|i| format!(" (request {i})")).unwrap_or_default();
                println!("{} {:<8}{status}{ms} {}{id}", e.time, e.kind, e.message);
            })
            .await?;
        }
        BundleCommand::Rm { names } => {
            let call = async |n: &str| client.call(Method::DELETE, &format!("/v1/bundles/{}", q(n)), None::<&()>).await;
            return crate::cli::for_each(&names, call, |n, _| println!("Removed {n}")).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
