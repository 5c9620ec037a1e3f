//! `atoll`: the CLI and, as `atoll daemon`, the daemon. Glue only: argument parsing, wiring of
//! the library crates, and printing.
#![forbid(unsafe_code)]

mod bundles;
mod cli;
mod compose;
mod containers;
mod daemon;
mod gateway;
mod island;
mod names;
mod networks;
mod output;
mod stack;
mod volumes;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes, documented in the README.
pub mod exit {
    /// The operation failed (the daemon said why).
    pub const FAILED: u8 = 1;
    /// Invalid usage (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The daemon could not be reached.
    pub const NO_DAEMON: u8 = 3;
    /// `atoll run` could not create or start the container (docker uses 125 too; 126 and 127
    /// when the command cannot be run or does not exist).
    pub const RUN_FAILED: u8 = 125;
}

/// `atoll ps | head -1`: once the reader is gone, the CLI ends as a C program killed by SIGPIPE
/// would (silently, status 141 as the shell reports it) instead of panicking in `println!`.
/// Rust ignores SIGPIPE, so writes fail with EPIPE; restoring the default action would take
/// unsafe code.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

fn main() -> ExitCode {
    // A standby shim takes no other argument, and its parse is the whole of its startup:
    // it skips building the CLI's command tree.
    if std::env::args_os().skip(1).eq(["shim", "--standby"]) {
        return ExitCode::from(atoll_runtime::shim::standby() as u8);
    }
    let args = cli::Cli::parse();
    // The shim stays small: no async runtime, no threads.
    if let cli::Command::Shim(s) = &args.command {
        return ExitCode::from(atoll_runtime::shim::run(s.config()) as u8);
    }
    // The network helper (DNS, published ports): one thread, its own process so it
    // outlives daemon restarts.
    if let cli::Command::Dns(names::DnsCommand::Serve { state, port }) = &args.command {
        daemon::init_logging(daemon::LogFormat::Text);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime starts");
        return match rt.block_on(atoll_net::helperd::serve(state.clone(), *port)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::from(exit::FAILED)
            }
        };
    }
    quiet_on_broken_pipe();
    // The daemon's work is parallel; a CLI command's is a few requests, and worker threads
    // would only cost it their start (every `atoll run` pays for them).
    let runtime = if matches!(args.command, cli::Command::Daemon(_)) {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
    .expect("tokio runtime starts");
    let result = runtime.block_on(cli::run(args));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", output::chain(&e));
            let code = match e.downcast_ref::<atoll_api::ClientError>() {
                Some(c) if c.is_unreachable() => exit::NO_DAEMON,
                _ if let Some(r) = e.downcast_ref::<containers::RunFailed>() => r.code,
                _ => exit::FAILED,
            };
            ExitCode::from(code)
        }
    }
}
