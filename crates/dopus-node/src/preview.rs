//! Link previews, fetched by the *sender's* node (docs/api.md, "Link previews").
//!
//! When the user turned previews on (off by default, Signal's choice), the node fetches the
//! first `http(s)` link of a text it sends, reads the page's title, description and image from
//! its `<title>` and `<meta>` tags, and sends them inside the encrypted message: a receiving node
//! never fetches anything, so a link cannot tell its owner who read the message or when.
//!
//! The fetch is defensive: only `http` and `https`; the host must resolve to public unicast
//! addresses only (so a message cannot make the node probe its own network; the resolver is
//! consulted on every redirect, and the connection goes to an address it approved, so DNS
//! rebinding cannot slip a private address in between); no cookies (a fresh agent per fetch),
//! at most 3 redirects, 5 s in all, 512 KiB of HTML and 32 KiB of image read. A failed or slow
//! fetch only means the message goes without a preview.
//!
//! The page is read by a small scanner for `<title>` and `<meta property|name=… content=…>`,
//! not a full HTML parser: it only ever extracts short texts that the UI shows as text (never
//! as HTML), so the worst a hostile page can do is choose its own title. Images are taken only
//! when they are a raster type and already at most 32 KiB; resizing larger ones needs an image
//! codec in the node, which is left for later (the preview then goes without an image).

use base64::Engine as _;
use dopus_proto::content::LinkPreview;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Most HTML read from a page.
const MAX_HTML_BYTES: u64 = 512 * 1024;
/// Largest image taken (raw bytes, before base64).
const MAX_IMAGE_BYTES: u64 = 32 * 1024;
/// Longest title kept, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Longest description kept, in characters.
const MAX_DESCRIPTION_CHARS: usize = 400;
/// The whole fetch (page and image each).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where previews may be fetched from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Also fetch from loopback and private addresses (tests with a local HTTP server; never
    /// for real use: `discordopus run --link-preview-allow-private`).
    pub allow_private: bool,
}

/// Why no preview was made (never shown to contacts; logged at debug).
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The host resolves to a loopback, private or otherwise non-public address.
    #[error("the link's host is not a public address")]
    NotPublic,
    /// The request failed (DNS, connection, TLS, status, timeout, size).
    #[error("fetching the link failed: {0}")]
    Fetch(String),
    /// The page is not HTML or says nothing worth showing.
    #[error("the page has no title or description")]
    Empty,
}

/// The first `http://` or `https://` link in `text`, without trailing punctuation. Links inside
/// `<…>` (Discord's "no embed" form) are skipped, as are masked links' labels.
pub fn first_link(text: &str) -> Option<String> {
    let mut rest = text;
    let mut offset = 0;
    loop {
        let found = ["https://", "http://"]
            .iter()
            .filter_map(|p| rest.find(p))
            .min()?;
        let start = offset + found;
        let tail = &text[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        let mut link = &tail[..end];
        // Trailing punctuation belongs to the sentence; a ")" only if unbalanced.
        loop {
            let trimmed = link.trim_end_matches(['.', ',', ';', ':', '!', '?', '*', '_', '~']);
            let trimmed = if trimmed.ends_with(')')
                && trimmed.matches('(').count() < trimmed.matches(')').count()
            {
                &trimmed[..trimmed.len() - 1]
            } else {
                trimmed
            };
            if trimmed.len() == link.len() {
                break;
            }
            link = trimmed;
        }
        let suppressed = start > 0 && text[..start].ends_with('<');
        let host_present = link.split_once("://").is_some_and(|(_, h)| !h.is_empty());
        if !suppressed && host_present && link.len() <= 2048 {
            return Some(link.to_owned());
        }
        offset = start + end.max(1);
        rest = &text[offset..];
    }
}

/// Fetches a preview of `url` (blocking: call from a blocking task).
pub fn fetch(url: &str, policy: Policy) -> Result<LinkPreview, PreviewError> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(PreviewError::Fetch("only http and https links".into()));
    }
    let refused = Arc::new(AtomicBool::new(false));
    let agent = agent(policy, refused.clone());
    let failed = |e: ureq::Error| {
        if refused.load(Ordering::Relaxed) {
            PreviewError::NotPublic
        } else {
            PreviewError::Fetch(e.to_string())
        }
    };
    let mut response = agent
        .get(url)
        .header("Accept", "text/html,application/xhtml+xml")
        .call()
        .map_err(failed)?;
    let html = response
        .body()
        .mime_type()
        .is_some_and(|m| m == "text/html" || m == "application/xhtml+xml");
    if !html {
        return Err(PreviewError::Empty);
    }
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_HTML_BYTES)
        .read_to_vec()
        .or_else(|e| match e {
            // A long page: what was read so far is enough for the <head>.
            ureq::Error::BodyExceedsLimit(_) => Ok(Vec::new()),
            other => Err(other),
        })
        .map_err(failed)?;
    let page = String::from_utf8_lossy(&bytes);
    let meta = scan(&page);
    let title = meta
        .og_title
        .or(meta.title)
        .map(|t| clip(&t, MAX_TITLE_CHARS));
    let description = meta
        .og_description
        .or(meta.description)
        .map(|d| clip(&d, MAX_DESCRIPTION_CHARS));
    if title.is_none() && description.is_none() {
        return Err(PreviewError::Empty);
    }
    let image = meta
        .og_image
        .and_then(|src| resolve(url, &src))
        .and_then(|src| fetch_image(&agent, &src));
    let preview = LinkPreview {
        url: url.to_owned(),
        title: title.filter(|t| !t.is_empty()),
        description: description.filter(|d| !d.is_empty()),
        image,
    };
    preview
        .validate()
        .map_err(|e| PreviewError::Fetch(format!("preview outside its limits: {e}")))?;
    Ok(preview)
}

fn agent(policy: Policy, refused: Arc<AtomicBool>) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .max_redirects(3)
        .http_status_as_error(true)
        .user_agent("DiscordOpus-link-preview/1")
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        PublicOnly {
            inner: DefaultResolver::default(),
            allow_private: policy.allow_private,
            refused,
        },
    )
}

fn fetch_image(agent: &ureq::Agent, src: &str) -> Option<String> {
    let mut response = agent.get(src).header("Accept", "image/*").call().ok()?;
    let kind = match response.body().mime_type()? {
        "image/png" => "png",
        "image/jpeg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    };
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_IMAGE_BYTES)
        .read_to_vec()
        .ok()?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    Some(format!("data:image/{kind};base64,{b64}"))
}

/// An image link relative to the page, made absolute (http and https only).
fn resolve(page: &str, src: &str) -> Option<String> {
    let base = url::Url::parse(page).ok()?;
    let joined = base.join(src.trim()).ok()?;
    matches!(joined.scheme(), "http" | "https").then(|| joined.to_string())
}

/// A resolver that lets through only public unicast addresses (unless told otherwise).
#[derive(Debug)]
struct PublicOnly {
    inner: DefaultResolver,
    allow_private: bool,
    refused: Arc<AtomicBool>,
}

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let all = self.inner.resolve(uri, config, timeout)?;
        let mut kept = self.inner.empty();
        for addr in all.iter() {
            if self.allow_private || is_public(addr.ip()) {
                kept.push(*addr);
            }
        }
        if kept.is_empty() {
            self.refused.store(true, Ordering::Relaxed);
            return Err(ureq::Error::HostNotFound);
        }
        Ok(kept)
    }
}

/// Whether `ip` is a public unicast address (not loopback, private, link-local, shared,
/// documentation, benchmarking, multicast, reserved or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x64 && s[1] == 0xff9b))
}

/// What the scanner found in a page.
#[derive(Debug, Default, PartialEq)]
struct Meta {
    title: Option<String>,
    og_title: Option<String>,
    description: Option<String>,
    og_description: Option<String>,
    og_image: Option<String>,
}

/// Reads `<title>` and the `<meta>` tags of interest from `page`, stopping at `<body`.
fn scan(page: &str) -> Meta {
    let mut meta = Meta::default();
    let lower = page.to_ascii_lowercase();
    let head_end = lower.find("<body").unwrap_or(lower.len());
    let mut at = 0;
    while let Some(found) = lower[at..head_end].find('<') {
        let start = at + found;
        let Some(close) = lower[start..head_end].find('>') else {
            break;
        };
        let end = start + close;
        let tag = &page[start + 1..end];
        let tag_lower = &lower[start + 1..end];
        if tag_lower.starts_with("title") && meta.title.is_none() {
            if let Some(stop) = lower[end..head_end].find("</title") {
                meta.title = Some(text(&page[end + 1..end + stop]));
                at = end + stop;
                continue;
            }
        } else if tag_lower.starts_with("meta") && tag_lower[4..].starts_with(char::is_whitespace) {
            let attrs = attributes(&tag[4..]);
            let get = |name: &str| {
                attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            let key = get("property").or_else(|| get("name")).unwrap_or("");
            if let Some(content) = get("content") {
                let content = text(content);
                let slot = match key.to_ascii_lowercase().as_str() {
                    "og:title" => &mut meta.og_title,
                    "og:description" => &mut meta.og_description,
                    "description" => &mut meta.description,
                    "og:image" | "og:image:url" | "og:image:secure_url" => &mut meta.og_image,
                    _ => &mut None,
                };
                if slot.is_none() && !content.is_empty() {
                    *slot = Some(content);
                }
            }
        }
        at = end + 1;
    }
    meta
}

/// The attributes of a tag's inside (after its name): `key="v"`, `key='v'` or `key=v`.
fn attributes(inside: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = inside.as_bytes();
    let mut i = 0;
    while i < b.len() && out.len() < 32 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        let key = &inside[key_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let quote = b[i];
                let start = i + 1;
                let len = b[start..]
                    .iter()
                    .position(|&c| c == quote)
                    .unwrap_or(b.len() - start);
                i = start + len + 1;
                &inside[start..start + len]
            } else {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                &inside[start..i]
            };
            if !key.is_empty() {
                out.push((key.to_owned(), value.to_owned()));
            }
        } else if key.is_empty() {
            i += 1;
        }
    }
    out
}

/// Text as shown: entities decoded, control characters dropped, whitespace collapsed.
fn text(raw: &str) -> String {
    let decoded = decode_entities(raw);
    let mut out = String::with_capacity(decoded.len());
    for word in decoded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
    }
    out
}

fn decode_entities(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        // Bytes, not a str slice: the 12th byte may fall inside a character.
        let Some(semi) = tail.as_bytes()[..tail.len().min(12)]
            .iter()
            .position(|&b| b == b';')
        else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let name = &tail[1..semi];
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            _ => name
                .strip_prefix("#x")
                .or_else(|| name.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn clip(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", s[..cut].trim_end()),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_link_finds_and_trims() {
        assert_eq!(
            first_link("see https://example.org/a?b=1. ok").as_deref(),
            Some("https://example.org/a?b=1")
        );
        assert_eq!(
            first_link("(http://example.org/wiki/X_(y))").as_deref(),
            Some("http://example.org/wiki/X_(y)")
        );
        assert_eq!(first_link("no links here"), None);
        assert_eq!(first_link("ftp://example.org"), None);
        assert_eq!(first_link("https:// alone"), None);
        // Discord's "no embed" form is skipped; the next link is taken.
        assert_eq!(
            first_link("<https://a.example/> and https://b.example/").as_deref(),
            Some("https://b.example/")
        );
    }

    #[test]
    fn scan_reads_title_and_meta() {
        let page = r#"<!doctype html><html><head>
            <title> Plain &amp; simple </title>
            <meta property="og:title" content="The &quot;Real&quot; Title">
            <meta name=description content='A page about &#x1F951; things'>
            <META PROPERTY="og:image" CONTENT="/img.png" />
            </head><body><meta property="og:title" content="ignored"></body></html>"#;
        let m = scan(page);
        assert_eq!(m.title.as_deref(), Some("Plain & simple"));
        assert_eq!(m.og_title.as_deref(), Some("The \"Real\" Title"));
        assert_eq!(m.description.as_deref(), Some("A page about 🥑 things"));
        assert_eq!(m.og_image.as_deref(), Some("/img.png"));
    }

    #[test]
    fn scan_survives_garbage() {
        for page in [
            "",
            "<",
            "<meta",
            "<meta content=",
            "<meta content=\"unterminated",
            "<title>never closed",
            "&#xFFFFFFFF; &#99999999999; &; &amp",
            "&abcdefghij€€€ &€;",
            "<meta\u{0}property=og:title content=x>",
        ] {
            let _ = scan(page);
            let _ = text(page);
        }
        assert_eq!(text("a\u{7}b\n\n  c"), "ab c");
    }

    #[test]
    fn only_public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn relative_images_are_resolved() {
        assert_eq!(
            resolve("http://h.example/a/b", "../i.png").as_deref(),
            Some("http://h.example/i.png")
        );
        assert_eq!(resolve("http://h.example/", "javascript:alert(1)"), None);
        assert_eq!(
            resolve("http://h.example/", "data:image/png;base64,AA"),
            None
        );
    }

    #[test]
    fn a_loopback_page_is_refused_unless_allowed() {
        // Nothing listens there; the resolver refuses before any connection is tried.
        let e = fetch("http://127.0.0.1:9/", Policy::default()).unwrap_err();
        assert!(matches!(e, PreviewError::NotPublic), "{e}");
        let e = fetch("http://localhost:9/", Policy::default()).unwrap_err();
        assert!(matches!(e, PreviewError::NotPublic), "{e}");
    }

    #[test]
    fn a_local_page_gives_a_preview_when_allowed() {
        use std::io::{Read, Write};
        const PAGE: &str = r#"<html><head><title>Local page</title>
            <meta property="og:description" content="Served on loopback">
            <meta property="og:image" content="/img.png"></head><body>hi</body></html>"#;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Serves the page, then the image; the thread ends with the test process if the
        // fetch never comes (the fetch itself is bounded by its 5 s timeout).
        std::thread::spawn(move || {
            for _ in 0..2 {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let image = buf[..n].starts_with(b"GET /img.png");
                let (ctype, body): (&str, &[u8]) = if image {
                    ("image/png", b"\x89PNG fake")
                } else {
                    ("text/html; charset=utf-8", PAGE.as_bytes())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            }
        });
        let url = format!("http://{addr}/page");
        let p = fetch(
            &url,
            Policy {
                allow_private: true,
            },
        )
        .unwrap();
        assert_eq!(p.url, url);
        assert_eq!(p.title.as_deref(), Some("Local page"));
        assert_eq!(p.description.as_deref(), Some("Served on loopback"));
        let image = p.image.expect("the image came along");
        assert!(image.starts_with("data:image/png;base64,"), "{image}");
    }

    #[test]
    fn clip_adds_an_ellipsis() {
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
