//! A strict Ogg page layer (RFC 3533), sans-IO: pages are parsed from a byte slice and written
//! into a `Vec<u8>`.
//!
//! Why not the `ogg` crate (0.9.2): its reader is built for lenient playback. It searches for the
//! next capture pattern through up to 150 KiB of garbage, treats a truncated last page as a clean
//! end of stream, does not check page sequence numbers, has `unimplemented!()`/`panic!` arms in
//! its page state machine, and reads through `Read + Seek`. We want the opposite for files that
//! come from users and peers: one error, with the byte offset, for any damage, and no panics. The
//! `ogg` crate is still used in the tests as an independent implementation to cross-check ours.

use thiserror::Error;

/// Size of the fixed part of a page header, before the lacing table.
const HEADER_LEN: usize = 27;
const CAPTURE: &[u8; 4] = b"OggS";
/// Header-type flags (RFC 3533 §6).
pub const FLAG_CONTINUED: u8 = 0x01;
pub const FLAG_BOS: u8 = 0x02;
pub const FLAG_EOS: u8 = 0x04;
/// Granule position of a page on which no packet ends.
pub const NO_GRANULE: u64 = u64::MAX;

/// What is wrong with an Ogg page.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PageError {
    #[error("no Ogg page at byte {offset} (capture pattern \"OggS\" missing)")]
    NoCapturePattern { offset: usize },
    #[error("Ogg page at byte {offset} has stream structure version {version}, only 0 exists")]
    BadVersion { offset: usize, version: u8 },
    #[error("Ogg page at byte {offset} has unknown header flags {flags:#04x}")]
    BadFlags { offset: usize, flags: u8 },
    #[error("Ogg page at byte {offset} is truncated: it needs {needed} bytes, {available} remain")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error(
        "Ogg page at byte {offset} fails its CRC: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Crc {
        offset: usize,
        stored: u32,
        computed: u32,
    },
}

/// One parsed page, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<'a> {
    /// Byte offset of the page in the input.
    pub offset: usize,
    pub flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub sequence: u32,
    pub lacing: &'a [u8],
    pub body: &'a [u8],
}

impl Page<'_> {
    pub fn is_continued(&self) -> bool {
        self.flags & FLAG_CONTINUED != 0
    }
    pub fn is_bos(&self) -> bool {
        self.flags & FLAG_BOS != 0
    }
    pub fn is_eos(&self) -> bool {
        self.flags & FLAG_EOS != 0
    }
    /// Whether the page's last segment is 255, so its last packet goes on in the next page.
    pub fn ends_with_open_packet(&self) -> bool {
        self.lacing.last() == Some(&255)
    }
    /// The packet pieces on this page, in order: `(bytes, ends_here)`. The first piece continues
    /// a packet from the previous page when [`Page::is_continued`].
    pub fn pieces(&self) -> Vec<(&[u8], bool)> {
        let mut out = Vec::new();
        let (mut start, mut len) = (0usize, 0usize);
        for &l in self.lacing {
            len += usize::from(l);
            if l < 255 {
                out.push((self.body.get(start..start + len).unwrap_or_default(), true));
                start += len;
                len = 0;
            }
        }
        if len > 0 || self.ends_with_open_packet() {
            out.push((self.body.get(start..start + len).unwrap_or_default(), false));
        }
        out
    }
}

/// Reads pages one after another from a byte slice, strictly: every page must start where the
/// previous one ended, and the input must end on a page boundary.
#[derive(Debug, Clone)]
pub struct PageReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> PageReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        PageReader { data, pos: 0 }
    }

    /// The next page, `None` at the end of the input, or the first error (after which the
    /// reader stays at the damaged page and returns the same error again).
    pub fn next_page(&mut self) -> Option<Result<Page<'a>, PageError>> {
        if self.pos >= self.data.len() {
            return None;
        }
        let page = parse_page(self.data, self.pos);
        if let Ok((_, end)) = &page {
            self.pos = *end;
        }
        Some(page.map(|(p, _)| p))
    }
}

fn parse_page(data: &[u8], offset: usize) -> Result<(Page<'_>, usize), PageError> {
    let rest = data.get(offset..).unwrap_or_default();
    let truncated = |needed: usize| PageError::Truncated {
        offset,
        needed,
        available: rest.len(),
    };
    if rest.len() < CAPTURE.len() || &rest[..4] != CAPTURE {
        if rest.len() < CAPTURE.len() && CAPTURE.starts_with(rest) {
            return Err(truncated(HEADER_LEN));
        }
        return Err(PageError::NoCapturePattern { offset });
    }
    let header = rest
        .get(..HEADER_LEN)
        .ok_or_else(|| truncated(HEADER_LEN))?;
    let version = header[4];
    if version != 0 {
        return Err(PageError::BadVersion { offset, version });
    }
    let flags = header[5];
    if flags & !(FLAG_CONTINUED | FLAG_BOS | FLAG_EOS) != 0 {
        return Err(PageError::BadFlags { offset, flags });
    }
    let granule = u64::from_le_bytes(le_array(&header[6..14]));
    let serial = u32::from_le_bytes(le_array(&header[14..18]));
    let sequence = u32::from_le_bytes(le_array(&header[18..22]));
    let stored = u32::from_le_bytes(le_array(&header[22..26]));
    let segments = usize::from(header[26]);
    let lacing = rest
        .get(HEADER_LEN..HEADER_LEN + segments)
        .ok_or_else(|| truncated(HEADER_LEN + segments))?;
    let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let total = HEADER_LEN + segments + body_len;
    let page_bytes = rest.get(..total).ok_or_else(|| truncated(total))?;
    let computed = crc32_page(page_bytes);
    if computed != stored {
        return Err(PageError::Crc {
            offset,
            stored,
            computed,
        });
    }
    let page = Page {
        offset,
        flags,
        granule,
        serial,
        sequence,
        lacing,
        body: &page_bytes[HEADER_LEN + segments..],
    };
    Ok((page, offset + total))
}

fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

/// The Ogg CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0, no final XOR,
/// computed over the whole page with the CRC field taken as zero.
fn crc32_page(page: &[u8]) -> u32 {
    let table = crc_table();
    let mut crc = 0u32;
    for (i, &b) in page.iter().enumerate() {
        let b = if (22..26).contains(&i) { 0 } else { b };
        crc = (crc << 8) ^ table[usize::from(((crc >> 24) as u8) ^ b)];
    }
    crc
}

fn crc_table() -> &'static [u32; 256] {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04C1_1DB7
                } else {
                    r << 1
                };
            }
            *e = r;
        }
        t
    })
}

/// Writes one logical stream's packets into pages. Packets of any size are split across pages
/// as needed (255 segments per page at most).
#[derive(Debug)]
pub struct PageWriter {
    serial: u32,
    sequence: u32,
    lacing: Vec<u8>,
    body: Vec<u8>,
    /// The page being built continues a packet from the previous page.
    continued: bool,
    /// Granule of the last packet that ends on the page being built.
    granule: u64,
    /// No page written yet: the next one carries BOS.
    first: bool,
}

impl PageWriter {
    pub fn new(serial: u32) -> Self {
        PageWriter {
            serial,
            sequence: 0,
            lacing: Vec::new(),
            body: Vec::new(),
            continued: false,
            granule: NO_GRANULE,
            first: true,
        }
    }

    /// Adds a whole packet whose end has granule position `granule`; full pages go to `out`.
    pub fn push_packet(&mut self, packet: &[u8], granule: u64, out: &mut Vec<u8>) {
        let mut rest = packet;
        loop {
            if self.lacing.len() == 255 {
                // Page full: the packet goes on in the next page.
                let open = self.lacing.last() == Some(&255);
                self.emit(0, out);
                self.continued = open;
            }
            if rest.len() >= 255 {
                self.lacing.push(255);
                self.body.extend_from_slice(&rest[..255]);
                rest = &rest[255..];
            } else {
                self.lacing.push(rest.len() as u8);
                self.body.extend_from_slice(rest);
                self.granule = granule;
                return;
            }
        }
    }

    /// Bytes of audio buffered in the page being built.
    pub fn buffered(&self) -> usize {
        self.body.len()
    }

    /// Writes the page being built (if it holds anything, or if `eos`), ending it.
    pub fn flush(&mut self, eos: bool, out: &mut Vec<u8>) {
        if !self.lacing.is_empty() || eos {
            self.emit(if eos { FLAG_EOS } else { 0 }, out);
            self.continued = false;
        }
    }

    fn emit(&mut self, extra_flags: u8, out: &mut Vec<u8>) {
        let mut flags = extra_flags;
        if self.continued {
            flags |= FLAG_CONTINUED;
        }
        if self.first {
            flags |= FLAG_BOS;
            self.first = false;
        }
        let start = out.len();
        out.extend_from_slice(CAPTURE);
        out.push(0);
        out.push(flags);
        out.extend_from_slice(&self.granule.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(self.lacing.len() as u8);
        out.extend_from_slice(&self.lacing);
        out.extend_from_slice(&self.body);
        let crc = crc32_page(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        self.sequence = self.sequence.wrapping_add(1);
        self.lacing.clear();
        self.body.clear();
        self.granule = NO_GRANULE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_crc32_posix_without_the_final_xor() {
        // CRC-32/POSIX (poly 0x04C11DB7, init 0, not reflected) checks "123456789" as
        // 0x765E7680 after its final XOR with all ones; Ogg has no final XOR.
        assert_eq!(crc32_page(b"123456789"), !0x765E_7680);
    }

    #[test]
    fn an_empty_page_round_trips() {
        let mut w = PageWriter::new(7);
        let mut out = Vec::new();
        w.flush(true, &mut out);
        let mut r = PageReader::new(&out);
        let page = r.next_page().and_then(Result::ok);
        assert!(page.is_some_and(|p| p.is_bos() && p.is_eos() && p.serial == 7));
        assert!(r.next_page().is_none());
    }

    #[test]
    fn a_packet_spanning_pages_round_trips() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut w = PageWriter::new(1);
        let mut out = Vec::new();
        w.push_packet(&big, 5, &mut out);
        w.flush(true, &mut out);
        let mut r = PageReader::new(&out);
        let mut joined = Vec::new();
        let mut pages = 0;
        while let Some(p) = r.next_page() {
            let p = p.expect("valid page");
            pages += 1;
            for (piece, _) in p.pieces() {
                joined.extend_from_slice(piece);
            }
        }
        assert_eq!(pages, 2);
        assert_eq!(joined, big);
    }
}
