//! Integration tests of dopus-media.

mod fixtures;
mod ogg_opus;
mod p2p;
