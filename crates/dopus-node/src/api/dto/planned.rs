//! Shapes the UI issue (20) asked of the node: profiles, link previews and the settings that
//! go with them. They began here as plans the UI was built against; the node now produces all
//! of them (docs/api.md, "Done since the UI issue"). The module keeps its name so that the
//! generated TypeScript and the snapshots stay where they are.

use super::Timestamp;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A user's profile as their contacts see it, sent end-to-end encrypted to each contact when it
/// changes (never through the server in the clear).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct ProfileCard {
    /// A short status line ("on holiday until Monday"), at most 128 characters.
    pub status_text: Option<String>,
    /// The avatar as a `data:image/webp;base64,…` (or png/jpeg) URL, at most 128×128 pixels and
    /// 48 KiB: the sender's UI resizes it, the node refuses larger ones, and a receiving UI
    /// shows it only as an `<img src>` of that data URL (never fetches anything).
    pub avatar: Option<String>,
    /// When the sender changed it (their clock).
    pub updated_at: Timestamp,
}

/// `PUT /me/profile`: changes our own profile; absent fields stay as they are, `null`
/// clears. Answers `Me` with `profile` filled, and the node sends the new card to every accepted
/// contact in the background.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(optional_fields = nullable)]
pub struct ProfilePatch {
    /// New display name (1–64 characters).
    pub display_name: Option<String>,
    /// New status text; `""` clears it.
    pub status_text: Option<String>,
    /// New avatar as a data URL (see [`ProfileCard::avatar`]); `""` removes it.
    pub avatar: Option<String>,
}

/// A link preview, fetched by the *sender's* node when link previews are on (off by default)
/// and sent inside the encrypted message. A receiving node never fetches anything for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct LinkPreview {
    /// The URL the preview describes (one of the message's links).
    pub url: String,
    /// The page's title (`og:title` or `<title>`), at most 200 characters.
    pub title: Option<String>,
    /// The page's description, at most 400 characters.
    pub description: Option<String>,
    /// A small image (`og:image`, resized by the sender's node) as a data URL, at most 32 KiB.
    pub image: Option<String>,
}

/// `PUT /settings` additions of the UI issue (the node's `Settings` and `SettingsPatch` carry
/// the same field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(optional_fields = nullable)]
pub struct PlannedSettings {
    /// Fetch link previews for links we send (off by default).
    pub link_previews: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_shapes() {
        insta::assert_json_snapshot!(ProfileCard {
            status_text: Some("on holiday".into()),
            avatar: None,
            updated_at: Timestamp(1_700_000_000_000),
        });
        insta::assert_json_snapshot!(LinkPreview {
            url: "https://example.org/".into(),
            title: Some("Example".into()),
            description: None,
            image: None,
        });
        let patch: ProfilePatch = serde_json::from_str(r#"{"status_text":""}"#).expect("parses");
        assert_eq!(patch.status_text.as_deref(), Some(""));
        assert_eq!(patch.display_name, None);
    }
}
