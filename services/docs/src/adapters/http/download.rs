//! Streamed downloads with validators (`ETag`, `If-None-Match`) and single
//! byte ranges (`Range`, `If-Range`).

use actix_web::body::SizedStream;
use actix_web::http::header::{
    self, CacheControl, CacheDirective, Charset, ContentDisposition, DispositionParam,
    DispositionType, EntityTag, ExtendedValue, Header, IfNoneMatch, IfRange,
};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use http_range::{HttpRange, HttpRangeParseError};
use tramita_web::Problem;

use crate::adapters::kafka::Docs;
use crate::domain::{Document, Version};

/// What part of a content to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// All of it (no range, a malformed one, or several).
    Full,
    /// Bytes `start..end`.
    Partial {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The range lies outside the content.
    Unsatisfiable,
}

/// Decides what to send for a `Range` header over a content of `size`
/// bytes (RFC 9110 §14): one satisfiable range is served; several are
/// served as the whole content (which a server may do); a malformed header
/// is ignored; a range that starts past the end cannot be satisfied.
pub fn byte_range(range: Option<&str>, size: u64) -> ByteRange {
    let Some(range) = range else {
        return ByteRange::Full;
    };
    match HttpRange::parse(range, size) {
        Ok(ranges) => match ranges.as_slice() {
            [one] => ByteRange::Partial {
                start: one.start,
                end: one.start + one.length,
            },
            _ => ByteRange::Full,
        },
        Err(HttpRangeParseError::NoOverlap) => ByteRange::Unsatisfiable,
        Err(HttpRangeParseError::InvalidRange) => ByteRange::Full,
    }
}

/// Whether `If-None-Match` names the current content (weak comparison).
fn not_modified(request: &HttpRequest, etag: &EntityTag) -> bool {
    match IfNoneMatch::parse(request) {
        Ok(IfNoneMatch::Any) => true,
        Ok(IfNoneMatch::Items(tags)) => tags.iter().any(|tag| tag.weak_eq(etag)),
        Err(_) => false,
    }
}

/// Whether a `Range` may be honoured: no `If-Range`, or one naming the
/// current content (strong comparison; dates never match, as no
/// `Last-Modified` is sent).
fn range_allowed(request: &HttpRequest, etag: &EntityTag) -> bool {
    if !request.headers().contains_key(header::IF_RANGE) {
        return true;
    }
    matches!(IfRange::parse(request), Ok(IfRange::EntityTag(tag)) if tag.strong_eq(etag))
}

/// `attachment` with the name: an ASCII `filename` for old clients and the
/// exact name as UTF-8 in `filename*` (RFC 6266).
fn disposition(document: &Document) -> ContentDisposition {
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![
            DispositionParam::Filename(document.name.ascii_fallback()),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: Charset::Ext("UTF-8".to_owned()),
                language_tag: None,
                value: document.name.as_str().as_bytes().to_vec(),
            }),
        ],
    }
}

/// Revalidate before reusing: the same URL serves a new version later.
fn cache_control() -> CacheControl {
    CacheControl(vec![CacheDirective::Private, CacheDirective::NoCache])
}

/// Answers a download of `version` of `document`.
pub(super) async fn respond(
    docs: &Docs,
    request: &HttpRequest,
    document: &Document,
    version: &Version,
) -> Result<HttpResponse, Problem> {
    let content = &version.content;
    let etag = EntityTag::new_strong(content.sha256.as_str().to_owned());
    if not_modified(request, &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header(header::ETag(etag))
            .insert_header(cache_control())
            .finish());
    }
    let size = content.size;
    let range = if range_allowed(request, &etag) {
        request
            .headers()
            .get(header::RANGE)
            .and_then(|value| value.to_str().ok())
    } else {
        None
    };
    let (status, start, end) = match byte_range(range, size) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Unsatisfiable => {
            let problem = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range not satisfiable",
            )
            .with_detail(format!("the content has {size} bytes"));
            let mut response = problem.error_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header::HeaderValue::from_str(&format!("bytes */{size}"))
                    .expect("a content range is a valid header value"),
            );
            return Ok(response);
        }
    };
    let document_id = document.id.0;
    let stream = docs
        .read(version, start, end)
        .await
        .map_err(|error| Problem::internal_from(&error))?
        .map(move |piece| {
            piece.map(actix_web::web::Bytes::from).map_err(|error| {
                // Headers are gone: all that can be done is to cut the body
                // short, which the client sees against Content-Length.
                tracing::error!(%document_id, error = format!("{error:#}"), "download broken off");
                error
            })
        });
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CONTENT_TYPE, content.media_type.content_type()))
        .insert_header(disposition(document))
        .insert_header(header::ETag(etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header(cache_control())
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if status == StatusCode::PARTIAL_CONTENT {
        response.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        ));
    }
    Ok(response.body(SizedStream::new(end - start, stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_range_the_whole_content_is_sent() {
        assert_eq!(byte_range(None, 100), ByteRange::Full);
    }

    #[test]
    fn a_single_range_is_served_within_the_content() {
        let partial = |start, end| ByteRange::Partial { start, end };
        assert_eq!(byte_range(Some("bytes=0-9"), 100), partial(0, 10));
        assert_eq!(byte_range(Some("bytes=90-"), 100), partial(90, 100));
        assert_eq!(byte_range(Some("bytes=-10"), 100), partial(90, 100));
        assert_eq!(byte_range(Some("bytes=95-200"), 100), partial(95, 100));
        assert_eq!(byte_range(Some("bytes=-500"), 100), partial(0, 100));
    }

    #[test]
    fn a_range_past_the_end_cannot_be_satisfied() {
        assert_eq!(
            byte_range(Some("bytes=100-"), 100),
            ByteRange::Unsatisfiable
        );
        assert_eq!(
            byte_range(Some("bytes=100-200"), 100),
            ByteRange::Unsatisfiable
        );
        assert_eq!(byte_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_get_the_whole_content() {
        for header in [
            "bytes=9-1",
            "items=0-1",
            "bytes=a-b",
            "bytes=0-1,5-6",
            "0-1",
        ] {
            assert_eq!(byte_range(Some(header), 100), ByteRange::Full, "{header}");
        }
    }
}
