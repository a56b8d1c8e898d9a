//! The command line: one binary, `discordopus`, with global `--data-dir` and `--json`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// DiscordOpus: private, peer-to-peer, end-to-end encrypted chat.
#[derive(Debug, Parser)]
#[command(name = "discordopus", version, about, long_about = None)]
pub struct Cli {
    /// Where this identity's encrypted store, keys and settings live
    /// [default: $XDG_DATA_HOME/discordopus, usually ~/.local/share/discordopus].
    #[arg(long, global = true, env = "DISCORDOPUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log filter (tracing syntax), e.g. `info` or `dopus_node=debug`.
    #[arg(long, global = true, env = "DISCORDOPUS_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Your identity: create it, show it.
    #[command(subcommand)]
    Id(IdCommand),
    /// Your contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Set your presence (needs a running node).
    Status {
        /// online, away, busy or invisible.
        status: StatusArg,
    },
    /// Send a message to a contact (needs a running node).
    Send {
        /// The contact's user ID (dopus1…).
        user_id: String,
        /// The message text.
        text: String,
        /// Reply to this message ID.
        #[arg(long, value_name = "MSG")]
        reply_to: Option<String>,
    },
    /// Edit one of your messages (needs a running node).
    Edit {
        /// The message ID.
        message_id: String,
        /// The new text.
        text: String,
    },
    /// Delete one of your messages (needs a running node).
    Delete {
        /// The message ID.
        message_id: String,
    },
    /// Add (or with --remove, take back) a reaction (needs a running node).
    React {
        /// The message ID.
        message_id: String,
        /// The emoji.
        emoji: String,
        /// Remove the reaction instead of adding it.
        #[arg(long)]
        remove: bool,
    },
    /// Show the conversation with a contact, oldest first (needs a running node).
    History {
        /// The contact's user ID.
        user_id: String,
        /// How many of the newest messages to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Send a file to a contact or a space channel: the node hashes and encrypts it,
    /// announces it and serves it peer to peer (in a channel, to the members allowed to view
    /// it; those who received it serve it too). Needs a running node; the file stays where
    /// it is.
    SendFile {
        /// A contact's user ID (dopus1…) or a channel ID (dchan1…).
        user_id: String,
        /// The file.
        path: std::path::PathBuf,
    },
    /// Call a contact (or pick up the call they are placing), headless: play an Ogg Opus file
    /// into the call and/or record what they send into one, without decoding. Hangs up when
    /// the played file ends; without `--play`, waits for them to hang up (needs a running
    /// node).
    Call {
        /// The contact's user ID (dopus1…).
        user_id: String,
        /// An Ogg Opus file to play into the call.
        #[arg(long)]
        play: Option<std::path::PathBuf>,
        /// Where to record the Opus packets they send (an Ogg Opus file).
        #[arg(long)]
        record: Option<std::path::PathBuf>,
        /// Give up (and hang up) after this many seconds.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// The current and recent calls (needs a running node).
    Calls,
    /// List file transfers with their progress (needs a running node).
    Transfers,
    /// Pause, resume, cancel or save a transfer (needs a running node).
    #[command(subcommand)]
    Transfer(TransferCommand),
    /// Save a received file into a directory (same as `transfer save`).
    Save {
        /// The transfer ID.
        id: String,
        /// The directory to save into.
        dir: std::path::PathBuf,
    },
    /// Search your message history (needs a running node).
    Search {
        /// Words to look for.
        text: String,
        /// Most results to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Spaces: create, invite, join, leave, kick, ban (needs a running node).
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Channels of spaces: send, read, create (needs a running node).
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Voice channels: join (headless, with a file to play and recordings), leave, mute,
    /// deafen, status (needs a running node).
    #[command(subcommand)]
    Voice(VoiceCommand),
    /// Print live events as JSON lines until interrupted (needs a running node).
    Events,
    /// Run the node in the foreground: unlock, connect to the signaling server, serve the local API.
    Run(RunArgs),
    /// Start the node and open the web UI (the default when no command is given).
    Up(UpArgs),
    /// One-machine demo: an embedded signaling server and two identities (alice, bob) as contacts.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// Create a space (with a text channel `general` and a voice channel `General`).
    Create {
        /// Its name.
        name: String,
    },
    /// The spaces you are in (or asked to join).
    List,
    /// One space: members, roles, channels.
    Show {
        /// The space id (dspace1…).
        space: String,
    },
    /// Make an invite code.
    Invite {
        /// The space id.
        space: String,
        /// How many joins it allows.
        #[arg(long, value_name = "N")]
        max_uses: Option<u32>,
        /// How long it is valid (90s, 30m, 12h, 7d).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// The invites of a space (id, creator, uses, expiry, revoked).
    Invites {
        /// The space id.
        space: String,
    },
    /// Revoke an invite: joins that use it are refused from now on.
    Revoke {
        /// The space id.
        space: String,
        /// The invite's id (from `space invite --json` or `space invites`).
        invite_id: String,
    },
    /// Join with an invite code (waits for the inviter's answer).
    Join {
        /// The invite code (dinvite1…).
        code: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Leave a space.
    Leave {
        /// The space id.
        space: String,
    },
    /// Remove a member (they may join again with a new invite).
    Kick {
        /// The space id.
        space: String,
        /// Their user ID.
        user_id: String,
    },
    /// Hand the space to another member (the owner only).
    Transfer {
        /// The space id.
        space: String,
        /// The new owner's user ID.
        user_id: String,
    },
    /// Roles: create one, give it to a member or take it away.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Remove a member and refuse them until unbanned.
    Ban {
        /// The space id.
        space: String,
        /// Their user ID.
        user_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create a role.
    Create {
        /// The space id.
        space: String,
        /// Its name.
        name: String,
        /// Its rank (higher is more powerful; below your own top role).
        #[arg(long, default_value_t = 1)]
        position: u32,
        /// What it grants, comma-separated (kick,ban,manage_roles,…).
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        /// Its colour, as RRGGBB hex.
        #[arg(long)]
        color: Option<String>,
    },
    /// Give a member a role.
    Assign {
        /// The space id.
        space: String,
        /// The member's user ID.
        user_id: String,
        /// The role id (32 hex digits, from `space show --json`).
        role: String,
    },
    /// Take a role from a member.
    Revoke {
        /// The space id.
        space: String,
        /// The member's user ID.
        user_id: String,
        /// The role id.
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VoiceCommand {
    /// Join a voice channel. Alone, returns at once (the node stays until `voice leave`). With
    /// `--play` or `--record`: plays the file once `--wait-for` participants are connected,
    /// records each other participant into its own file (`OUT.opus` records
    /// `OUT-<user id>.opus` beside it), and leaves once the file has played out and nobody
    /// has sent audio for `--idle-secs`.
    Join {
        /// The voice channel's ID.
        channel_id: String,
        /// An Ogg Opus file to play into the channel.
        #[arg(long)]
        play: Option<std::path::PathBuf>,
        /// Where to record the others (one Ogg Opus file per participant, named from this).
        #[arg(long)]
        record: Option<std::path::PathBuf>,
        /// Start playing once this many participants are connected.
        #[arg(long, default_value_t = 1)]
        wait_for: u32,
        /// Leave once nobody has sent audio for this many seconds (after our file ended).
        #[arg(long, default_value_t = 3)]
        idle_secs: u64,
        /// Give up (and leave) after this many seconds.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// Leave the voice channel.
    Leave,
    /// Mute the microphone (`--off` to unmute).
    Mute {
        /// Unmute instead.
        #[arg(long)]
        off: bool,
    },
    /// Hear nothing and send nothing (`--off` to undeafen).
    Deafen {
        /// Undeafen instead.
        #[arg(long)]
        off: bool,
    },
    /// Our voice state, or with a space ID who is in each of its voice channels.
    Status {
        /// A space ID.
        space_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Send a message in a text channel.
    Send {
        /// The channel id (dchan1…).
        channel: String,
        /// The message text.
        text: String,
        /// Reply to this message ID.
        #[arg(long, value_name = "MSG")]
        reply_to: Option<String>,
    },
    /// Show a channel's messages, oldest first.
    Messages {
        /// The channel id.
        channel: String,
        /// How many of the newest messages to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Create a channel in a space.
    Create {
        /// The space id.
        space: String,
        /// Its name.
        name: String,
        /// A voice channel instead of a text channel.
        #[arg(long)]
        voice: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdCommand {
    /// Create a new identity (the passphrase comes from DISCORDOPUS_PASSPHRASE or a prompt).
    Create {
        /// Your display name, shown to contacts.
        #[arg(long)]
        name: String,
    },
    /// Show your user ID, device keys and fingerprint.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Add a contact to your list by ID, without asking them.
    Add {
        /// Their user ID (dopus1…).
        user_id: String,
        /// A name for them.
        #[arg(long)]
        name: Option<String>,
    },
    /// List your contacts.
    List,
    /// Ask someone to become your contact (needs a running node).
    Request {
        /// Their user ID.
        user_id: String,
        /// A name for them.
        #[arg(long)]
        name: Option<String>,
    },
    /// Accept a contact request (needs a running node).
    Accept {
        /// Their user ID.
        user_id: String,
    },
    /// Decline a contact request (needs a running node).
    Decline {
        /// Their user ID.
        user_id: String,
    },
}

/// A presence you can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Online,
    Away,
    Busy,
    Invisible,
}

impl StatusArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusArg::Online => "online",
            StatusArg::Away => "away",
            StatusArg::Busy => "busy",
            StatusArg::Invisible => "invisible",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The signaling server, e.g. wss://signal.example.org or ws://127.0.0.1:7400 (saved in settings).
    #[arg(long, env = "DISCORDOPUS_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Where to serve the local API and UI (always a loopback address unless --allow-remote-api).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub api: SocketAddr,
    /// Allow --api on a non-loopback address (the token still protects it).
    #[arg(long)]
    pub allow_remote_api: bool,
    /// Privacy mode: connect to contacts only through TURN relays (from the signaling
    /// server's login answer), so they never learn this machine's IP address.
    #[arg(long)]
    pub relay_only: bool,
    /// Let link previews (a setting, off by default) fetch pages on loopback and private
    /// addresses too. For tests with a local HTTP server; never for real use.
    #[arg(long, hide = true)]
    pub link_preview_allow_private: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Do not try to open a browser.
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its server and two identities [default: a fresh temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Do not try to open a browser.
    #[arg(long)]
    pub no_browser: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["discordopus", "id", "show", "--json", "--data-dir", "/x"])
            .unwrap();
        assert!(cli.json);
        assert_eq!(cli.data_dir, Some(PathBuf::from("/x")));
    }
}

/// `transfer …`.
#[derive(Debug, Subcommand)]
pub enum TransferCommand {
    /// Stop fetching (or serving) for now.
    Pause {
        /// The transfer ID.
        id: String,
    },
    /// Go on.
    Resume {
        /// The transfer ID.
        id: String,
    },
    /// Give up; the other side hears of it.
    Cancel {
        /// The transfer ID.
        id: String,
    },
    /// Decrypt a received file into a directory (its hash is checked first).
    Save {
        /// The transfer ID.
        id: String,
        /// The directory to save into.
        dir: std::path::PathBuf,
    },
}
