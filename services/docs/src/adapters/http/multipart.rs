//! Reading one file from a `multipart/form-data` body, a chunk at a time,
//! straight into the upload use case.

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::http::header::{self, Charset};
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use futures::StreamExt;
use tramita_web::Problem;

use super::{too_large, unsupported};
use crate::adapters::kafka::Docs;
use crate::domain::{Actor, DocumentName, MediaType, Upload};

/// The name of the part carrying the file.
const FILE_PART: &str = "file";

/// What multipart framing may add to a content (boundaries, part
/// headers): a body declared longer than the size limit plus this is
/// refused before it is read.
const FRAMING_SLACK: u64 = 64 * 1024;

/// Receives the one part named `file` of `body` as a staged upload.
///
/// Anything wrong (no such part, another part, a second file, a bad name,
/// malformed framing, a refused content) leaves nothing stored. After a
/// refusal the rest of the body is read and dropped, up to the size limit
/// once more, so the client, still sending, reads the answer rather than a
/// reset connection; a longer body is cut off.
pub(super) async fn receive_one_file(
    docs: &Docs,
    request: &HttpRequest,
    mut body: Multipart,
    actor: &Actor,
) -> Result<Upload, Problem> {
    ensure_form_data(request)?;
    let max = docs.policy().max_bytes();
    if let Some(length) = declared_length(request) {
        if length > max.saturating_add(FRAMING_SLACK) {
            return Err(too_large(format!(
                "the body has {length} bytes; a file may have at most {max}"
            )));
        }
    }
    let mut budget = max;
    let mut received: Option<Upload> = None;
    // Whether the body can still be read: after a framing error, reading
    // on may wait for bytes that never come.
    let mut readable = true;
    let failure = loop {
        let mut field = match body.next().await {
            None => break None,
            Some(Ok(field)) => field,
            Some(Err(error)) => {
                readable = false;
                break Some(malformed(error));
            }
        };
        let named = if field.name() != Some(FILE_PART) {
            Err(Problem::bad_request(format!(
                "unexpected part {:?}: send one part named `{FILE_PART}`",
                field.name().unwrap_or_default()
            )))
        } else if received.is_some() {
            Err(Problem::bad_request("send one file per request"))
        } else {
            file_name(&field)
        };
        let name = match named {
            Ok(name) => name,
            Err(problem) => {
                readable = drain(&mut field, &mut budget).await;
                break Some(problem);
            }
        };
        let declared = field
            .content_type()
            .and_then(|mime| MediaType::parse(mime.essence_str()).ok());
        let mut receiving = match docs.receive(name, declared, actor.clone()).await {
            Ok(receiving) => receiving,
            Err(error) => {
                readable = drain(&mut field, &mut budget).await;
                break Some(error.into());
            }
        };
        let mut failed = None;
        while let Some(chunk) = field.next().await {
            let pushed = match chunk {
                Ok(bytes) => receiving.push(&bytes).await.map_err(Problem::from),
                Err(error) => {
                    readable = false;
                    Err(malformed(error))
                }
            };
            if let Err(problem) = pushed {
                failed = Some(problem);
                break;
            }
        }
        if let Some(problem) = failed {
            receiving.abandon().await;
            if readable {
                readable = drain(&mut field, &mut budget).await;
            }
            break Some(problem);
        }
        match receiving.finish().await {
            Ok(upload) => received = Some(upload),
            Err(error) => break Some(error.into()),
        }
    };
    match failure {
        None => received.ok_or_else(|| {
            Problem::bad_request(format!("the body has no part named `{FILE_PART}`"))
        }),
        Some(problem) => {
            if let Some(upload) = received {
                docs.discard(upload.id).await;
            }
            if readable {
                drain_rest(&mut body, &mut budget).await;
            }
            Err(problem)
        }
    }
}

/// 415 unless the request is `multipart/form-data`.
fn ensure_form_data(request: &HttpRequest) -> Result<(), Problem> {
    let essence = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<actix_web::mime::Mime>().ok())
        .map(|mime| mime.essence_str().to_ascii_lowercase());
    if essence.as_deref() == Some("multipart/form-data") {
        Ok(())
    } else {
        Err(unsupported(
            "send the file as multipart/form-data, in a part named `file`",
        ))
    }
}

fn declared_length(request: &HttpRequest) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The problem for malformed multipart framing.
fn malformed(error: MultipartError) -> Problem {
    match error {
        MultipartError::ContentTypeMissing | MultipartError::ContentTypeIncompatible => {
            unsupported("send the file as multipart/form-data")
        }
        other => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-multipart",
            "Malformed multipart body",
        )
        .with_detail(format!("the multipart body cannot be read: {other}")),
    }
}

/// The sanitised name of the part's file (`filename*` over `filename`, as
/// RFC 6266 says).
fn file_name(field: &Field) -> Result<DocumentName, Problem> {
    let disposition = field
        .content_disposition()
        .ok_or_else(|| Problem::bad_request("the file part has no Content-Disposition"))?;
    let raw = match (disposition.get_filename_ext(), disposition.get_filename()) {
        (Some(extended), _) => match &extended.charset {
            Charset::Ext(charset) if charset.eq_ignore_ascii_case("utf-8") => {
                String::from_utf8(extended.value.clone()).map_err(|_| {
                    Problem::bad_request("the file name (filename*) is not valid UTF-8")
                })?
            }
            Charset::Iso_8859_1 => extended.value.iter().map(|b| char::from(*b)).collect(),
            Charset::Us_Ascii if extended.value.is_ascii() => {
                extended.value.iter().map(|b| char::from(*b)).collect()
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "the file name's charset {other} is not supported; use UTF-8"
                )))
            }
        },
        (None, Some(plain)) => plain.to_owned(),
        (None, None) => {
            return Err(Problem::bad_request(format!(
                "the `{FILE_PART}` part has no file name"
            )))
        }
    };
    DocumentName::sanitise(&raw)
        .map_err(|e| Problem::bad_request(format!("invalid file name: {e}")))
}

/// Reads and drops the rest of `field`, within `budget` bytes; whether the
/// body can still be read after it.
async fn drain(field: &mut Field, budget: &mut u64) -> bool {
    while let Some(chunk) = field.next().await {
        match chunk {
            Ok(bytes) if (bytes.len() as u64) <= *budget => *budget -= bytes.len() as u64,
            _ => return false,
        }
    }
    true
}

/// Reads and drops the rest of `body`, within `budget` bytes.
async fn drain_rest(body: &mut Multipart, budget: &mut u64) {
    while let Some(Ok(mut field)) = body.next().await {
        if !drain(&mut field, budget).await {
            return;
        }
    }
}
