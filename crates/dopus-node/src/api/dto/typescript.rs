//! The web UI's TypeScript types, generated from the DTOs with `ts-rs` into one file,
//! `web/src/api/generated.ts`.
//!
//! The test `generated_typescript_is_current` renders the file and compares it with the one in
//! the tree, so `cargo nextest` (and so `scripts/test.sh` and CI) fails when a struct changed
//! and the file was not regenerated. `scripts/gen-api-types.sh` regenerates it (the same test
//! with `DOPUS_WRITE_TS=1`).
//!
//! One file rather than ts-rs's file per type: the UI imports one module, and a declaration
//! refers to the others by name without import lines. 64-bit integers are written as `number`
//! (every counter, sequence number and timestamp of the API is far below 2^53).

use super::*;
use ts_rs::{Config, TS};

/// Where the generated file lives, relative to this crate.
pub const PATH: &str = "../../web/src/api/generated.ts";

const HEADER: &str = "\
// GENERATED from the Rust DTOs in crates/dopus-node/src/api/dto/ by ts-rs. Do not edit.
// Change the Rust structs, then run ./scripts/gen-api-types.sh; a test fails while this file
// and the structs differ (docs/api.md, \"Types\").
/* eslint-disable */
";

fn decl<T: TS + ?Sized>(cfg: &Config, out: &mut String) {
    out.push('\n');
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    out.push_str("export ");
    out.push_str(&T::decl(cfg));
    out.push('\n');
}

/// The whole generated file.
pub fn render() -> String {
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(HEADER);
    macro_rules! all {
        ($($t:ty),* $(,)?) => { $( decl::<$t>(&cfg, &mut out); )* };
    }
    all!(
        // scalars
        UserId,
        MessageId,
        ConversationId,
        Timestamp,
        // node
        NodeState,
        SignalingState,
        StatusSignaling,
        Status,
        DeviceKeys,
        Me,
        Theme,
        Settings,
        ErrorCode,
        ErrorDetail,
        ErrorBody,
        // contacts
        Presence,
        ContactState,
        ConnectionMode,
        ConnectionState,
        CandidateType,
        Traffic,
        Connection,
        Contact,
        Safety,
        VerificationState,
        SasEmoji,
        Verification,
        // messages
        DeliveryState,
        MessageKind,
        Reaction,
        Message,
        MessagePage,
        SentMessages,
        SearchResult,
        SearchResults,
        // spaces
        SpaceMembership,
        SpaceMember,
        SpaceFormerMember,
        SpaceRole,
        SpaceChannelKind,
        SpaceChannel,
        Space,
        SpaceInvite,
        SpaceInviteInfo,
        ChannelOverwrite,
        SpacePatch,
        TransferSpace,
        WaitingState,
        WithheldReason,
        WaitingMessage,
        ChannelPage,
        // files
        TransferDirection,
        TransferState,
        TransferReason,
        FileDimensions,
        Transfer,
        Transfers,
        TransferProgress,
        DroppedSource,
        SendFile,
        SaveFile,
        TransferAction,
        // calls
        CallState,
        CallEnd,
        BrowserLegStats,
        CallMedia,
        CallVideo,
        Call,
        Calls,
        StartCall,
        AcceptCall,
        CallAction,
        BrowserOffer,
        BrowserAnswer,
        // voice channels
        VoiceParticipant,
        VoiceChannel,
        VoicePeerMedia,
        VoiceSlot,
        VoiceBrowser,
        VoiceBrowserAnswer,
        VoiceMedia,
        MyVoice,
        VoiceState,
        SpaceVoice,
        JoinVoice,
        VoicePatch,
        // events
        Event,
        // requests
        CreateIdentity,
        Unlock,
        SetStatus,
        AddContact,
        ContactRequest,
        ContactPatch,
        PageQuery,
        SendMessage,
        SendMessages,
        Typing,
        MarkRead,
        Edit,
        React,
        SearchQuery,
        SettingsPatch,
        CreateSpace,
        CreateInvite,
        JoinSpace,
        CreateChannel,
        ChannelPatch,
        ChannelOrder,
        ChannelPlace,
        CreateRole,
        RolePatch,
        SendChannelMessage,
        // planned (awaits node support)
        planned::ProfileCard,
        planned::ProfilePatch,
        planned::LinkPreview,
        planned::PlannedSettings,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn generated_typescript_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(PATH);
        let fresh = render();
        if std::env::var_os("DOPUS_WRITE_TS").is_some() {
            std::fs::write(&path, &fresh).expect("write the generated TypeScript");
            return;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == fresh,
            "{} is out of date with the Rust DTOs: run ./scripts/gen-api-types.sh and commit the result",
            path.display()
        );
    }

    #[test]
    fn no_bigint_reaches_the_ui() {
        assert!(!render().contains("bigint"));
    }
}
