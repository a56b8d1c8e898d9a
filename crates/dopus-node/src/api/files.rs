//! File handlers that move bytes between the UI and the node (docs/api.md, "Files"): the UI
//! hands over a file to send, and reads the decrypted content of a transfer for previews,
//! players and "save as". Served to the node's own UI only, behind the API's token.

use super::error::ApiError;
use crate::runtime::Node;
use crate::runtime::files_api::{FilePreview, FileTarget};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dopus_types::UserId;
use serde::Deserialize;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

/// How much the reading thread reads at once.
const CHUNK: usize = 256 * 1024;

/// The query of `POST /conversations/{id}/files/upload`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file's name (made safe before it touches the disk).
    pub name: String,
    /// Its MIME type; guessed from the name when left out.
    #[serde(default)]
    pub mime: Option<String>,
    /// An image's width in pixels (with `height`).
    #[serde(default)]
    pub width: Option<u32>,
    /// An image's height in pixels.
    #[serde(default)]
    pub height: Option<u32>,
}

/// The header carrying a thumbnail (base64 of a JPEG, PNG or WebP of at most 16 KiB).
pub const THUMBNAIL_HEADER: &str = "x-dopus-thumbnail";

/// The preview the UI sent with an upload. Anything out of bounds is left out (it is
/// optional, and refusing before the body is read would break the upload's connection).
pub fn preview_of(q: &UploadQuery, headers: &HeaderMap) -> FilePreview {
    use base64::Engine as _;
    use dopus_proto::peer::Base64Bytes;
    use dopus_proto::transfer::{
        Dimensions, MAX_DIMENSION, MAX_THUMBNAIL_BYTES, Thumbnail, ThumbnailType,
    };
    let dimensions = match (q.width, q.height) {
        (Some(w), Some(h))
            if (1..=MAX_DIMENSION).contains(&w) && (1..=MAX_DIMENSION).contains(&h) =>
        {
            Some(Dimensions {
                width: w,
                height: h,
            })
        }
        _ => None,
    };
    let thumbnail = headers
        .get(THUMBNAIL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .filter(|d| !d.is_empty() && d.len() <= MAX_THUMBNAIL_BYTES)
        .and_then(|d| {
            let kind = if d.starts_with(&[0xff, 0xd8, 0xff]) {
                ThumbnailType::Jpeg
            } else if d.starts_with(b"\x89PNG\r\n\x1a\n") {
                ThumbnailType::Png
            } else if d.len() > 12 && &d[..4] == b"RIFF" && &d[8..12] == b"WEBP" {
                ThumbnailType::Webp
            } else {
                return None;
            };
            Some(Thumbnail {
                kind,
                data: Base64Bytes(d),
            })
        });
    FilePreview {
        dimensions,
        thumbnail,
    }
}

/// `POST /conversations/{id}/files/upload?name=…[&mime=…][&width=…&height=…]`: the body is
/// the file's bytes (`Content-Length` required); an optional `X-Dopus-Thumbnail` header.
/// Answers `202` with the transfer in state `preparing`.
pub async fn upload(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let peer = UserId::parse(&id)?;
    upload_to(node, FileTarget::Peer(peer), q, headers, body).await
}

/// `POST /channels/{id}/files/upload?…`: like [`upload`], into a space channel.
pub async fn channel_upload(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let channel = dopus_types::ChannelId::parse(&id)
        .map_err(|_| ApiError::bad_request("invalid channel id"))?;
    upload_to(node, FileTarget::Channel(channel), q, headers, body).await
}

async fn upload_to(
    node: Arc<Node>,
    target: FileTarget,
    q: UploadQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("Content-Length is required"))?;
    let preview = preview_of(&q, &headers);
    let t = node
        .upload_file(target, q.name, q.mime, len, preview, body)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(t)).into_response())
}

/// The query of `GET /transfers/{id}/content`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentQuery {
    /// `1`: as an attachment to save ("save as"), whatever its type.
    #[serde(default)]
    pub download: Option<u8>,
}

/// Types the browser may show inline from the node's origin: images it decodes, and media
/// for its players. Never HTML, SVG, XML, PDF or scripts: anything else is an attachment.
pub fn inline_type(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif" | "image/bmp"
    ) || ((mime.starts_with("video/") || mime.starts_with("audio/"))
        && mime
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/.+-".contains(&b)))
}

/// One `Range: bytes=…` of a `size`-byte file: `Ok(None)` for none (or one we do not
/// support: several ranges), `Err` for one that cannot be satisfied.
pub fn parse_range(value: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = value else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        (start, end)
    };
    if start >= size || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// A `filename*` parameter (RFC 8187) for a name.
fn disposition(kind: &str, name: &str) -> String {
    let safe = dopus_core::transfer::safe_file_name(name);
    let mut enc = String::new();
    for b in safe.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename*=UTF-8''{enc}")
}

/// `GET /transfers/{id}/content[?download=1]`: the decrypted file, with single byte ranges
/// (video and audio players seek with them).
pub async fn content(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Query(q): Query<ContentQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (t, source) = node.transfer_content(&id).await?;
    let size = t.size;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, start, end) = match range {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Err(()) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let mut reader = tokio::task::spawn_blocking(move || source.open())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || {
        if let Err(e) = reader.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = end - start;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::ErrorKind::UnexpectedEof.into()));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let inline = q.download != Some(1) && inline_type(&t.mime);
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let ty = if inline {
        t.mime.as_str()
    } else {
        "application/octet-stream"
    };
    let put = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(h, header::CONTENT_TYPE, ty);
    put(h, header::CONTENT_LENGTH, &(end - start).to_string());
    put(h, header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        put(
            h,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    put(
        h,
        header::CONTENT_DISPOSITION,
        &disposition(if inline { "inline" } else { "attachment" }, &t.name),
    );
    put(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    put(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    );
    put(h, header::CACHE_CONTROL, "private, no-store");
    put(
        h,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-"), 10), Ok(Some((0, 10))));
        assert_eq!(parse_range(Some("bytes=2-4"), 10), Ok(Some((2, 5))));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Ok(Some((5, 10))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=x-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-"), 0), Err(()));
    }

    #[test]
    fn only_harmless_types_are_inline() {
        for ok in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "audio/ogg",
            "video/webm",
        ] {
            assert!(inline_type(ok), "{ok}");
        }
        for no in [
            "text/html",
            "image/svg+xml",
            "application/pdf",
            "text/javascript",
            "application/xhtml+xml",
            "application/octet-stream",
            "text/plain",
        ] {
            assert!(!inline_type(no), "{no}");
        }
    }

    #[test]
    fn previews_out_of_bounds_are_left_out() {
        use base64::Engine as _;
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let q = |w, h| UploadQuery {
            name: "a.jpg".into(),
            mime: None,
            width: w,
            height: h,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            THUMBNAIL_HEADER,
            HeaderValue::from_str(&b64(&[0xff, 0xd8, 0xff, 0xe0, 1, 2])).unwrap(),
        );
        let p = preview_of(&q(Some(640), Some(480)), &headers);
        assert_eq!(p.dimensions.map(|d| (d.width, d.height)), Some((640, 480)));
        assert_eq!(
            p.thumbnail.map(|t| t.kind),
            Some(dopus_proto::transfer::ThumbnailType::Jpeg)
        );
        // No height, a zero width, an SVG, too large, not base64: all left out.
        assert!(
            preview_of(&q(Some(640), None), &HeaderMap::new())
                .dimensions
                .is_none()
        );
        assert!(
            preview_of(&q(Some(0), Some(1)), &HeaderMap::new())
                .dimensions
                .is_none()
        );
        for bad in [
            b64(b"<svg onload=alert(1)>"),
            b64(&[&[0xff, 0xd8, 0xff][..], &[0; 16 * 1024]].concat()),
            "not base64!".to_owned(),
        ] {
            let mut h = HeaderMap::new();
            h.insert(THUMBNAIL_HEADER, HeaderValue::from_str(&bad).unwrap());
            assert!(
                preview_of(&q(None, None), &h).thumbnail.is_none(),
                "{bad:.20}"
            );
        }
    }

    #[test]
    fn dispositions_are_encoded() {
        assert_eq!(
            disposition("attachment", "a b/..\"x.jpg"),
            "attachment; filename*=UTF-8''a%20b_.._x.jpg"
        );
    }
}
