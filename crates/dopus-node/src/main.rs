//! `discordopus`: the DiscordOpus node and its command line.

use clap::Parser;
use dopus_node::cli::{
    ChannelCommand, Cli, Command, ContactsCommand, IdCommand, RoleCommand, SpaceCommand,
    TransferCommand, UpArgs, VoiceCommand,
};
use dopus_node::client::ApiClient;
use dopus_node::output::Output;
use dopus_node::{launch, local, paths, remote};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            #[allow(clippy::print_stderr, reason = "the CLI reports its error on stderr")]
            {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The TURN and STUN libraries log peer and relay addresses at info and warn; addresses never
/// go to the log at info or above, so they are held to errors whatever the user's filter says.
const QUIET_ADDRESS_LOGGERS: &str = "turn_client_proto=error,stun_proto=error,turn_types=error";

fn init_logging(filter: &str) {
    let filter = format!("{filter},{QUIET_ADDRESS_LOGGERS}");
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let dir = paths::data_dir(cli.data_dir.as_deref())?;
    let command = cli.command.unwrap_or(Command::Up(UpArgs {
        run: dopus_node::cli::RunArgs {
            server: std::env::var("DISCORDOPUS_SERVER").ok(),
            api: ([127, 0, 0, 1], 0).into(),
            allow_remote_api: false,
            relay_only: false,
            link_preview_allow_private: false,
        },
        no_browser: false,
    }));
    match command {
        Command::Id(IdCommand::Create { name }) => local::id_create(&dir, out, &name),
        Command::Id(IdCommand::Show) => match ApiClient::find(&dir) {
            Some(api) => local::id_show_remote(&api, out),
            None => local::id_show(&dir, out),
        },
        Command::Contacts(ContactsCommand::Add { user_id, name }) => match ApiClient::find(&dir) {
            Some(api) => local::contacts_add_remote(&api, out, &user_id, name.as_deref()),
            None => local::contacts_add(&dir, out, &user_id, name.as_deref()),
        },
        Command::Contacts(ContactsCommand::List) => match ApiClient::find(&dir) {
            Some(api) => remote::contacts_list(&api, out),
            None => local::contacts_list(&dir, out),
        },
        Command::Contacts(ContactsCommand::Request { user_id, name }) => remote::contact_action(
            &ApiClient::require(&dir)?,
            out,
            "request",
            &user_id,
            name.as_deref(),
        ),
        Command::Contacts(ContactsCommand::Accept { user_id }) => {
            remote::contact_action(&ApiClient::require(&dir)?, out, "accept", &user_id, None)
        }
        Command::Contacts(ContactsCommand::Decline { user_id }) => {
            remote::contact_action(&ApiClient::require(&dir)?, out, "decline", &user_id, None)
        }
        Command::Status { status } => {
            remote::set_status(&ApiClient::require(&dir)?, out, status.as_str())
        }
        Command::Send {
            user_id,
            text,
            reply_to,
        } => remote::send(
            &ApiClient::require(&dir)?,
            out,
            &user_id,
            &text,
            reply_to.as_deref(),
        ),
        Command::Edit { message_id, text } => {
            remote::edit(&ApiClient::require(&dir)?, out, &message_id, &text)
        }
        Command::Delete { message_id } => {
            remote::delete(&ApiClient::require(&dir)?, out, &message_id)
        }
        Command::React {
            message_id,
            emoji,
            remove,
        } => remote::react(&ApiClient::require(&dir)?, out, &message_id, &emoji, remove),
        Command::History { user_id, limit } => {
            remote::history(&ApiClient::require(&dir)?, out, &user_id, limit)
        }
        Command::SendFile { user_id, path } => {
            remote::send_file(&ApiClient::require(&dir)?, out, &user_id, &path)
        }
        Command::Transfers => remote::transfers(&ApiClient::require(&dir)?, out),
        Command::Call {
            user_id,
            play,
            record,
            max_secs,
        } => dopus_node::remote_calls::call(
            &ApiClient::require(&dir)?,
            out,
            &user_id,
            play.as_deref(),
            record.as_deref(),
            std::time::Duration::from_secs(max_secs),
        ),
        Command::Calls => dopus_node::remote_calls::calls(&ApiClient::require(&dir)?, out),
        Command::Save { id, dir: to } => remote::save(&ApiClient::require(&dir)?, out, &id, &to),
        Command::Transfer(cmd) => {
            let api = ApiClient::require(&dir)?;
            match cmd {
                TransferCommand::Pause { id } => remote::transfer_action(&api, out, &id, "pause"),
                TransferCommand::Resume { id } => remote::transfer_action(&api, out, &id, "resume"),
                TransferCommand::Cancel { id } => remote::transfer_action(&api, out, &id, "cancel"),
                TransferCommand::Save { id, dir: to } => remote::save(&api, out, &id, &to),
            }
        }
        Command::Search { text, limit } => {
            remote::search(&ApiClient::require(&dir)?, out, &text, limit)
        }
        Command::Space(cmd) => {
            use dopus_node::remote_spaces as rs;
            let api = ApiClient::require(&dir)?;
            match cmd {
                SpaceCommand::Create { name } => rs::create(&api, out, &name),
                SpaceCommand::List => rs::list(&api, out),
                SpaceCommand::Show { space } => rs::show(&api, out, &space),
                SpaceCommand::Invite {
                    space,
                    max_uses,
                    expires,
                } => rs::invite(&api, out, &space, max_uses, expires.as_deref()),
                SpaceCommand::Invites { space } => rs::invites(&api, out, &space),
                SpaceCommand::Transfer { space, user_id } => {
                    rs::transfer(&api, out, &space, &user_id)
                }
                SpaceCommand::Role(RoleCommand::Create {
                    space,
                    name,
                    position,
                    permissions,
                    color,
                }) => rs::role_create(
                    &api,
                    out,
                    &space,
                    &name,
                    position,
                    &permissions,
                    color.as_deref(),
                ),
                SpaceCommand::Role(RoleCommand::Assign {
                    space,
                    user_id,
                    role,
                }) => rs::role_member(&api, out, "PUT", &space, &user_id, &role),
                SpaceCommand::Role(RoleCommand::Revoke {
                    space,
                    user_id,
                    role,
                }) => rs::role_member(&api, out, "DELETE", &space, &user_id, &role),
                SpaceCommand::Revoke { space, invite_id } => {
                    rs::revoke(&api, out, &space, &invite_id)
                }
                SpaceCommand::Join { code, wait } => rs::join(&api, out, &code, wait),
                SpaceCommand::Leave { space } => rs::leave(&api, out, &space),
                SpaceCommand::Kick { space, user_id } => {
                    rs::member_action(&api, out, "kick", &space, &user_id)
                }
                SpaceCommand::Ban { space, user_id } => {
                    rs::member_action(&api, out, "ban", &space, &user_id)
                }
            }
        }
        Command::Voice(cmd) => {
            use dopus_node::remote_voice as rv;
            let api = ApiClient::require(&dir)?;
            match cmd {
                VoiceCommand::Join {
                    channel_id,
                    play,
                    record,
                    wait_for,
                    idle_secs,
                    max_secs,
                } => rv::join(
                    &api,
                    out,
                    &channel_id,
                    &rv::JoinOptions {
                        play: play.as_deref(),
                        record: record.as_deref(),
                        wait_for,
                        idle: std::time::Duration::from_secs(idle_secs),
                        max: std::time::Duration::from_secs(max_secs),
                    },
                ),
                VoiceCommand::Leave => rv::leave(&api, out),
                VoiceCommand::Mute { off } => rv::set(&api, out, Some(!off), None),
                VoiceCommand::Deafen { off } => rv::set(&api, out, None, Some(!off)),
                VoiceCommand::Status { space_id } => rv::status(&api, out, space_id.as_deref()),
            }
        }
        Command::Channel(cmd) => {
            use dopus_node::remote_spaces as rs;
            let api = ApiClient::require(&dir)?;
            match cmd {
                ChannelCommand::Send {
                    channel,
                    text,
                    reply_to,
                } => rs::channel_send(&api, out, &channel, &text, reply_to.as_deref()),
                ChannelCommand::Messages { channel, limit } => {
                    rs::channel_messages(&api, out, &channel, limit)
                }
                ChannelCommand::Create { space, name, voice } => {
                    rs::channel_create(&api, out, &space, &name, voice)
                }
            }
        }
        Command::Events => remote::events(&ApiClient::require(&dir)?, out),
        Command::Run(args) => launch::run(dir, out, args, launch::Launch::Headless),
        Command::Up(args) => launch::run(
            dir,
            out,
            args.run,
            launch::Launch::Ui {
                open_browser: !args.no_browser,
            },
        ),
        Command::Demo(args) => launch::demo(out, args),
    }
}
