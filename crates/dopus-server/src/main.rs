//! `discordopus-server`: parses the configuration, starts the server, stops it on SIGTERM/SIGINT.

use anyhow::Context as _;
use clap::Parser as _;
use dopus_server::config::{Args, FileConfig, resolve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let (config, log) = resolve(&args, &file)?;
    // The TURN libraries log client addresses at info and warn; keep them quiet unless the
    // operator asks for them by name.
    let mut directives = log.filter.clone();
    for quiet in ["turn_server_proto", "stun_proto", "turn_types"] {
        if !directives.contains(quiet) {
            directives.push_str(&format!(",{quiet}=error"));
        }
    }
    let filter =
        tracing_subscriber::EnvFilter::try_new(&directives).context("invalid log filter")?;
    if log.json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let server = dopus_server::start(config).await?;
    // One machine-readable line so scripts and tests can find the ports when they asked for 0.
    #[allow(
        clippy::print_stdout,
        reason = "the startup line is the binary's interface"
    )]
    {
        println!(
            "discordopus-server listening on {} stun {} turn {}",
            server.ws_url(),
            server
                .stun_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into()),
            server
                .turn_addrs
                .map(|a| a.listen.to_string())
                .unwrap_or_else(|| "off".into())
        );
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
