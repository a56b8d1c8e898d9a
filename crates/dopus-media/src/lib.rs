//! DiscordOpus media: the headless media source and sink (Ogg Opus files in and out, packets
//! never decoded), and the groundwork for calls over str0m (see `docs/media.md`).
//!
//! Everything here is sans-IO: bytes in, bytes out, time passed in by the caller.

pub mod ogg;
pub mod opus;

pub use opus::{
    OggOpusFile, OggOpusWriter, OpusError, OpusHead, OpusPacket, OpusPlayer, OpusTags, PacketError,
    PushOutcome,
};
