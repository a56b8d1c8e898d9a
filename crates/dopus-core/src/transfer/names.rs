//! File names from peers, made safe before anything touches a disk.
//!
//! A manifest's name is whatever the sender's machine (or a hostile peer) put there. It must
//! never choose a directory, hide itself, overwrite a device, or pretend to another extension.
//! [`safe_file_name`] turns any string into one plain file name that is valid on Linux, macOS
//! and Windows; callers still join it to a directory they chose and never follow it anywhere
//! else.

/// Longest safe name, in UTF-8 bytes. Below the usual 255 so a collision suffix (` (12)`) and
/// `.part` still fit.
pub const MAX_SAFE_NAME_BYTES: usize = 200;

/// The name used when nothing usable is left.
pub const FALLBACK_NAME: &str = "file";

/// Longest extension kept when a long name is shortened, in bytes (with the dot).
const MAX_KEPT_EXTENSION: usize = 16;

/// Windows device names: a file called `NUL.txt` or `com1` is the device, in any directory.
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "COM0", "COM1", "COM2", "COM3", "COM4",
    "COM5", "COM6", "COM7", "COM8", "COM9", "COM¹", "COM²", "COM³", "LPT0", "LPT1", "LPT2", "LPT3",
    "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9", "LPT¹", "LPT²", "LPT³",
];

/// Whether `c` may not appear in a safe name: path separators, characters Windows refuses,
/// control characters, and the invisible formatting characters that reorder or hide text
/// (`invoice\u{202E}fdp.exe` shows as `invoiceexe.pdf`).
fn forbidden(c: char) -> bool {
    matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*')
        || c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width spaces and joiners, LRM/RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}' // byte order mark
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
        )
}

/// Makes `name` a single, safe file name (see the module docs): forbidden characters become
/// `_`, leading dots and spaces and trailing dots and spaces go, Windows device names get a `_`
/// in front, and names longer than [`MAX_SAFE_NAME_BYTES`] are shortened keeping their
/// extension. Never empty, never `.` or `..`.
pub fn safe_file_name(name: &str) -> String {
    let replaced: String = name
        .chars()
        .map(|c| if forbidden(c) { '_' } else { c })
        .collect();
    // Leading dots hide a file (and `..` climbs); trailing dots and spaces are dropped by
    // Windows, so `a.exe.` would open as `a.exe`.
    let trimmed = replaced
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    let mut out = if trimmed.is_empty() {
        FALLBACK_NAME.to_string()
    } else {
        trimmed.to_string()
    };
    let stem = out.split('.').next().unwrap_or("").trim_end_matches(' ');
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        out.insert(0, '_');
    }
    shorten(out)
}

/// Where the extension starts (the dot), if the name has one: a short run of letters and
/// digits after the last dot, not at the start (`archive.tar.gz` → `.gz`, `_.._etc` → none).
fn extension_at(name: &str) -> Option<usize> {
    let i = name.rfind('.')?;
    let ext = &name[i + 1..];
    let ok = i > 0
        && !ext.is_empty()
        && ext.len() < MAX_KEPT_EXTENSION
        && ext.chars().all(char::is_alphanumeric);
    ok.then_some(i)
}

/// Cuts `name` to [`MAX_SAFE_NAME_BYTES`] at a character boundary, keeping a short extension.
fn shorten(name: String) -> String {
    if name.len() <= MAX_SAFE_NAME_BYTES {
        return name;
    }
    let ext = extension_at(&name).map_or("", |i| &name[i..]);
    let mut cut = MAX_SAFE_NAME_BYTES - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let stem = name[..cut].trim_end_matches(['.', ' ']);
    let stem = if stem.is_empty() { FALLBACK_NAME } else { stem };
    format!("{stem}{ext}")
}

/// The `n`-th alternative of a safe name for when it is taken: `photo.jpg` → `photo (2).jpg`.
/// `n` of 0 or 1 gives the name itself. The result is safe and within the length limit.
pub fn numbered_name(safe: &str, n: u32) -> String {
    if n <= 1 {
        return safe.to_string();
    }
    let (stem, ext) = match extension_at(safe) {
        Some(i) => safe.split_at(i),
        None => (safe, ""),
    };
    let suffix = format!(" ({n})");
    let mut room = MAX_SAFE_NAME_BYTES.saturating_sub(suffix.len() + ext.len());
    room = room.min(stem.len());
    while !stem.is_char_boundary(room) {
        room -= 1;
    }
    format!("{}{suffix}{ext}", &stem[..room])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn separators_and_climbing_are_neutralised() {
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(
            safe_file_name("..\\..\\Windows\\win.ini"),
            "_.._Windows_win.ini"
        );
        assert_eq!(safe_file_name("/etc/shadow"), "_etc_shadow");
        assert_eq!(safe_file_name(".."), FALLBACK_NAME);
        assert_eq!(safe_file_name("."), FALLBACK_NAME);
        assert_eq!(safe_file_name(""), FALLBACK_NAME);
        assert_eq!(safe_file_name("   "), FALLBACK_NAME);
        assert_eq!(safe_file_name(".bashrc"), "bashrc");
        assert_eq!(safe_file_name("C:evil"), "C_evil");
    }

    #[test]
    fn control_and_invisible_characters_go() {
        assert_eq!(safe_file_name("a\nb\tc\0d\x7f"), "a_b_c_d_");
        assert_eq!(safe_file_name("invoice\u{202E}fdp.exe"), "invoice_fdp.exe");
        assert_eq!(safe_file_name("x\u{200B}y"), "x_y");
        assert_eq!(safe_file_name("report.pdf. . "), "report.pdf");
    }

    #[test]
    fn windows_devices_are_renamed() {
        for n in [
            "CON",
            "con.txt",
            "NUL",
            "nul.tar.gz",
            "COM1",
            "lpt9.log",
            "AUX .x",
            "COM¹",
        ] {
            let safe = safe_file_name(n);
            assert!(safe.starts_with('_'), "{n} -> {safe}");
        }
        assert_eq!(safe_file_name("console.txt"), "console.txt");
        assert_eq!(safe_file_name("COM10"), "COM10");
    }

    #[test]
    fn long_names_keep_their_extension() {
        let long = format!("{}.jpeg", "é".repeat(300));
        let safe = safe_file_name(&long);
        assert!(safe.len() <= MAX_SAFE_NAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with(".jpeg"));
        let no_ext = "x".repeat(1000);
        assert_eq!(safe_file_name(&no_ext).len(), MAX_SAFE_NAME_BYTES);
        let silly_ext = format!("a.{}", "b".repeat(500));
        assert_eq!(safe_file_name(&silly_ext).len(), MAX_SAFE_NAME_BYTES);
    }

    #[test]
    fn ordinary_names_pass_unchanged() {
        for n in [
            "photo.jpg",
            "Résumé 2026.pdf",
            "дом.txt",
            "猫.png",
            "a b c",
            "v1.2.3.tar.gz",
        ] {
            assert_eq!(safe_file_name(n), n);
        }
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered_name("photo.jpg", 1), "photo.jpg");
        assert_eq!(numbered_name("photo.jpg", 2), "photo (2).jpg");
        assert_eq!(numbered_name("archive", 12), "archive (12)");
        assert_eq!(numbered_name("v1.tar.gz", 3), "v1.tar (3).gz");
        assert_eq!(numbered_name("_.._etc_passwd", 2), "_.._etc_passwd (2)");
        assert_eq!(numbered_name("notes.", 2), "notes. (2)");
        let long = safe_file_name(&"ü".repeat(300));
        let n = numbered_name(&long, 99);
        assert!(n.len() <= MAX_SAFE_NAME_BYTES && n.ends_with(" (99)"));
    }

    proptest! {
        #[test]
        fn any_input_gives_one_safe_component(name in "(?s).{0,300}", n in 0u32..1000) {
            for safe in [safe_file_name(&name), numbered_name(&safe_file_name(&name), n)] {
                prop_assert!(!safe.is_empty());
                prop_assert!(safe.len() <= MAX_SAFE_NAME_BYTES);
                prop_assert!(safe != "." && safe != "..");
                prop_assert!(!safe.starts_with('.') && !safe.starts_with(' '));
                prop_assert!(!safe.ends_with('.') && !safe.ends_with(' '));
                prop_assert!(!safe.chars().any(forbidden), "{:?}", safe);
                let path = std::path::Path::new(&safe);
                prop_assert_eq!(path.components().count(), 1);
                prop_assert!(matches!(path.components().next(), Some(std::path::Component::Normal(_))));
                let stem = safe.split('.').next().unwrap_or("").trim_end_matches(' ');
                prop_assert!(!RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)), "{}", safe);
                // Idempotent: a safe name stays as it is.
                prop_assert_eq!(safe_file_name(&safe), safe.clone());
            }
        }
    }
}
