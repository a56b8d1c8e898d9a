//! Integration tests of the file I/O half with the sans-IO core: whole transfers between
//! in-process nodes over memory pipes, resume, liars, changed sources, full disks, the segment
//! boundaries of the cipher in a sparse file, and saving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "tests print seeds"
)]

mod common;
mod decode;
mod disk;
mod multi_source;
mod resume;
mod save;
mod segments;
mod source_changed;
