//! What a content is and whether it is accepted: its media type sniffed from
//! its own first bytes, its size and its SHA-256, all decided while it
//! streams in, chunk by chunk, without ever holding the whole of it.

use sha2::{Digest, Sha256};

use super::values::{Sha256Digest, ValueError};

/// A media type's essence (`type/subtype`, lowercase, no parameters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaType(String);

/// The plain-text media type.
pub const TEXT_PLAIN: &str = "text/plain";

/// What clients send when they do not know the type.
const GENERIC: &str = "application/octet-stream";

impl MediaType {
    /// Parses `type/subtype[; parameters]`, keeping the essence lowercased.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let essence = raw.split(';').next().unwrap_or_default().trim();
        let lower = essence.to_ascii_lowercase();
        let valid_token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        match lower.split_once('/') {
            Some((kind, sub)) if valid_token(kind) && valid_token(sub) => {
                // A common alias some clients send for JPEG.
                if lower == "image/jpg" {
                    return Ok(Self("image/jpeg".into()));
                }
                Ok(Self(lower))
            }
            _ => Err(ValueError(format!("{essence:?} is not a media type"))),
        }
    }

    /// The essence as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is plain text.
    pub fn is_text_plain(&self) -> bool {
        self.0 == TEXT_PLAIN
    }

    /// The `Content-Type` to serve it with: plain text is always UTF-8 here.
    pub fn content_type(&self) -> String {
        if self.is_text_plain() {
            format!("{TEXT_PLAIN}; charset=utf-8")
        } else {
            self.0.clone()
        }
    }
}

/// The configured limits on what may be uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    allowed: Vec<MediaType>,
    max_bytes: u64,
}

/// Why a content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It is larger than the limit.
    #[error("the content exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Its type is not one of the allowed ones.
    #[error("the content is {found}, which is not accepted (accepted: {allowed})")]
    NotAllowed {
        /// What the content is.
        found: String,
        /// The allowed types, comma separated.
        allowed: String,
    },
    /// It is not what it was declared to be.
    #[error("the content was declared as {declared} but it is {found}")]
    Mismatch {
        /// The declared type.
        declared: String,
        /// What the content is, by its signature.
        found: String,
    },
    /// Declared as plain text, it is not UTF-8 text.
    #[error("the content was declared as text/plain but it is not UTF-8 text ({0})")]
    NotText(&'static str),
    /// It has no known signature and was not declared as plain text.
    #[error("the type of the content cannot be recognised; declare plain text as text/plain")]
    Unrecognised,
}

impl MediaPolicy {
    /// How many first bytes are examined to recognise a content: enough for
    /// the ZIP-based office formats, whose telling entries may come after a
    /// first compressed entry.
    pub const SNIFF_BYTES: usize = 64 * 1024;

    /// A policy accepting `allowed` types up to `max_bytes` bytes.
    pub fn new(allowed: Vec<MediaType>, max_bytes: u64) -> Self {
        Self { allowed, max_bytes }
    }

    /// The largest accepted content.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The accepted types.
    pub fn allowed(&self) -> &[MediaType] {
        &self.allowed
    }

    fn allows(&self, media_type: &str) -> bool {
        self.allowed.iter().any(|a| a.as_str() == media_type)
    }

    fn allowed_list(&self) -> String {
        self.allowed
            .iter()
            .map(MediaType::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Decides the type of a content from what the client declared
    /// (`None`, or `application/octet-stream`, when it did not know) and
    /// what its first bytes are by their signature (`None` when they match
    /// no known signature):
    /// - a recognised content is its recognised type, which must be allowed
    ///   and agree with a declared type;
    /// - a content with no signature is accepted only when declared as
    ///   `text/plain` (then it must turn out to be UTF-8 text without NUL);
    ///   a recognised `text/*` type (XML, HTML, a script) declared as plain
    ///   text is kept as plain text, which is how it will be served.
    pub fn decide(
        &self,
        declared: Option<&MediaType>,
        sniffed: Option<&str>,
    ) -> Result<MediaType, Refusal> {
        let declared = declared.filter(|d| d.as_str() != GENERIC);
        let declared_text = declared.is_some_and(MediaType::is_text_plain);
        match sniffed {
            Some(found) if declared_text && found.starts_with("text/") => self.plain_text(),
            Some(found) => {
                if !self.allows(found) {
                    return Err(Refusal::NotAllowed {
                        found: found.to_owned(),
                        allowed: self.allowed_list(),
                    });
                }
                match declared {
                    Some(d) if d.as_str() != found => Err(Refusal::Mismatch {
                        declared: d.as_str().to_owned(),
                        found: found.to_owned(),
                    }),
                    _ => Ok(MediaType(found.to_owned())),
                }
            }
            None if declared_text => self.plain_text(),
            None => match declared {
                Some(d) => Err(Refusal::Mismatch {
                    declared: d.as_str().to_owned(),
                    found: "not recognisable".to_owned(),
                }),
                None => Err(Refusal::Unrecognised),
            },
        }
    }

    fn plain_text(&self) -> Result<MediaType, Refusal> {
        if self.allows(TEXT_PLAIN) {
            Ok(MediaType(TEXT_PLAIN.to_owned()))
        } else {
            Err(Refusal::NotAllowed {
                found: TEXT_PLAIN.to_owned(),
                allowed: self.allowed_list(),
            })
        }
    }
}

/// The DOCX media type.
const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// `infer`'s matchers, preceded by a DOCX matcher that does not depend on
/// the order of the archive's entries: `infer` recognises a DOCX only when
/// its third entry is the `word/` part, which not every writer does.
static SNIFFER: std::sync::LazyLock<infer::Infer> = std::sync::LazyLock::new(|| {
    let mut sniffer = infer::Infer::new();
    sniffer.add(DOCX, "docx", is_docx);
    sniffer
});

/// A ZIP archive whose first entries (as far as `buf` reaches) include the
/// OOXML content-types part and a `word/` part.
fn is_docx(buf: &[u8]) -> bool {
    let names = zip_entry_names(buf);
    names.iter().any(|n| *n == b"[Content_Types].xml")
        && names.iter().any(|n| n.starts_with(b"word/"))
}

/// The names of the ZIP local file headers found one after another from
/// the start of `buf`, stopping at the first one whose size is not in its
/// header (streamed entries) or that `buf` does not hold whole.
fn zip_entry_names(buf: &[u8]) -> Vec<&[u8]> {
    const HEADER: usize = 30;
    let u16_at = |at: usize| {
        buf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        buf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut names = Vec::new();
    let mut at = 0;
    while buf.get(at..at + 4) == Some(b"PK\x03\x04".as_slice()) {
        let (Some(flags), Some(size), Some(name_len), Some(extra_len)) = (
            u16_at(at + 6),
            u32_at(at + 18),
            u16_at(at + 26),
            u16_at(at + 28),
        ) else {
            break;
        };
        let Some(name) = buf.get(at + HEADER..at + HEADER + name_len) else {
            break;
        };
        names.push(name);
        if flags & 0x08 != 0 {
            break;
        }
        at += HEADER + name_len + extra_len + size;
    }
    names
}

/// What a fully received, accepted content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// Its media type.
    pub media_type: MediaType,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
}

/// What to do with the chunk just given to [`Inspection::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to store yet: the first bytes are held until the type is
    /// known.
    Hold,
    /// The type is now known: store these held bytes (which include the
    /// chunk just pushed).
    Release(Vec<u8>),
    /// Store the chunk just pushed.
    Pass,
}

/// Inspects a content as it streams in: its size against the limit, its
/// SHA-256, its type from its first bytes, and, for plain text, that every
/// byte is UTF-8 text without NUL. Memory held: at most
/// [`MediaPolicy::SNIFF_BYTES`] until the type is decided, then nothing but
/// the hash state.
#[derive(Debug)]
pub struct Inspection<'p> {
    policy: &'p MediaPolicy,
    declared: Option<MediaType>,
    size: u64,
    hasher: Sha256,
    held: Vec<u8>,
    decided: Option<MediaType>,
    text: Option<Utf8Text>,
}

impl<'p> Inspection<'p> {
    /// Starts inspecting a content declared as `declared`.
    pub fn new(policy: &'p MediaPolicy, declared: Option<MediaType>) -> Self {
        Self {
            policy,
            declared,
            size: 0,
            hasher: Sha256::new(),
            held: Vec::new(),
            decided: None,
            text: None,
        }
    }

    /// Takes the next chunk; refuses as soon as the content is known to be
    /// unacceptable.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Step, Refusal> {
        self.size += chunk.len() as u64;
        if self.size > self.policy.max_bytes {
            return Err(Refusal::TooLarge {
                limit: self.policy.max_bytes,
            });
        }
        self.hasher.update(chunk);
        if self.decided.is_some() {
            if let Some(text) = &mut self.text {
                text.push(chunk)?;
            }
            return Ok(Step::Pass);
        }
        self.held.extend_from_slice(chunk);
        if self.held.len() < MediaPolicy::SNIFF_BYTES {
            return Ok(Step::Hold);
        }
        self.decide()?;
        Ok(Step::Release(std::mem::take(&mut self.held)))
    }

    /// Decides the type from the held bytes and checks them as text if
    /// need be.
    fn decide(&mut self) -> Result<(), Refusal> {
        let sniffed = SNIFFER.get(&self.held).map(|kind| kind.mime_type());
        let media_type = self.policy.decide(self.declared.as_ref(), sniffed)?;
        if media_type.is_text_plain() {
            let mut text = Utf8Text::default();
            text.push(&self.held)?;
            self.text = Some(text);
        }
        self.decided = Some(media_type);
        Ok(())
    }

    /// Ends the content: the bytes still held (a content shorter than the
    /// sniffing window), to be stored, and what the content is.
    pub fn finish(mut self) -> Result<(Vec<u8>, Inspected), Refusal> {
        if self.decided.is_none() {
            self.decide()?;
        }
        if let Some(text) = &self.text {
            text.finish()?;
        }
        let media_type = self.decided.take().expect("decided above");
        Ok((
            std::mem::take(&mut self.held),
            Inspected {
                media_type,
                size: self.size,
                sha256: Sha256Digest::from_bytes(self.hasher.finalize().into()),
            },
        ))
    }
}

/// Checks that a byte stream is UTF-8 without NUL, across chunk boundaries
/// that may split a character.
#[derive(Debug, Default)]
struct Utf8Text {
    /// The start of a character split by the previous chunk's end.
    carry: Vec<u8>,
}

impl Utf8Text {
    fn push(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let joined;
        let data = if self.carry.is_empty() {
            chunk
        } else {
            joined = [self.carry.as_slice(), chunk].concat();
            joined.as_slice()
        };
        self.carry.clear();
        if data.contains(&0) {
            return Err(Refusal::NotText("it contains NUL bytes"));
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            // Only an incomplete character at the very end: wait for more.
            Err(e) if e.error_len().is_none() => {
                self.carry.extend_from_slice(&data[e.valid_up_to()..]);
                Ok(())
            }
            Err(_) => Err(Refusal::NotText("it is not valid UTF-8")),
        }
    }

    fn finish(&self) -> Result<(), Refusal> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(Refusal::NotText("it ends in the middle of a character"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n";
    pub(crate) const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    fn mt(raw: &str) -> MediaType {
        MediaType::parse(raw).unwrap()
    }

    pub(crate) fn default_policy(max_bytes: u64) -> MediaPolicy {
        MediaPolicy::new(
            [
                "application/pdf",
                "image/png",
                "image/jpeg",
                "application/vnd.oasis.opendocument.text",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "text/plain",
            ]
            .into_iter()
            .map(mt)
            .collect(),
            max_bytes,
        )
    }

    /// Feeds `content` in chunks of `chunk` bytes, collecting what is to be stored.
    fn inspect(
        policy: &MediaPolicy,
        declared: Option<&str>,
        content: &[u8],
        chunk: usize,
    ) -> Result<(Vec<u8>, Inspected), Refusal> {
        let mut inspection = Inspection::new(policy, declared.map(mt));
        let mut stored = Vec::new();
        for piece in content.chunks(chunk.max(1)) {
            match inspection.push(piece)? {
                Step::Hold => {}
                Step::Release(held) => stored.extend(held),
                Step::Pass => stored.extend_from_slice(piece),
            }
        }
        let (rest, inspected) = inspection.finish()?;
        stored.extend(rest);
        Ok((stored, inspected))
    }

    #[test]
    fn media_types_are_parsed_to_their_lowercase_essence() {
        assert_eq!(mt("Text/Plain; charset=UTF-8").as_str(), "text/plain");
        assert_eq!(mt("image/jpg").as_str(), "image/jpeg");
        assert!(MediaType::parse("pdf").is_err());
        assert!(MediaType::parse("a/b c").is_err());
        assert!(MediaType::parse("/x").is_err());
        assert_eq!(mt("text/plain").content_type(), "text/plain; charset=utf-8");
    }

    #[test]
    fn given_a_recognised_allowed_type_then_it_is_accepted_when_declared_alike_or_not_at_all() {
        let policy = default_policy(1024);
        for declared in [
            Some("application/pdf"),
            None,
            Some("application/octet-stream"),
        ] {
            let decided = policy
                .decide(declared.map(mt).as_ref(), Some("application/pdf"))
                .unwrap();
            assert_eq!(decided.as_str(), "application/pdf", "{declared:?}");
        }
    }

    #[test]
    fn given_a_content_that_is_not_what_it_claims_then_it_is_a_mismatch() {
        let policy = default_policy(1024);
        let refusal = policy
            .decide(Some(&mt("application/pdf")), Some("image/png"))
            .unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Mismatch {
                declared: "application/pdf".into(),
                found: "image/png".into()
            }
        );
        let refusal = policy.decide(Some(&mt("image/png")), None).unwrap_err();
        assert!(matches!(refusal, Refusal::Mismatch { .. }), "{refusal}");
    }

    #[test]
    fn given_a_recognised_type_outside_the_list_then_it_is_not_allowed() {
        let policy = default_policy(1024);
        let refusal = policy
            .decide(Some(&mt("application/zip")), Some("application/zip"))
            .unwrap_err();
        assert!(
            matches!(refusal, Refusal::NotAllowed { ref found, .. } if found == "application/zip")
        );
        assert!(refusal.to_string().contains("application/pdf"), "{refusal}");
    }

    #[test]
    fn given_no_signature_then_only_declared_plain_text_is_accepted() {
        let policy = default_policy(1024);
        assert_eq!(
            policy
                .decide(Some(&mt("text/plain")), None)
                .unwrap()
                .as_str(),
            "text/plain"
        );
        assert_eq!(policy.decide(None, None), Err(Refusal::Unrecognised));
        assert_eq!(
            policy.decide(Some(&mt("application/octet-stream")), None),
            Err(Refusal::Unrecognised)
        );
        let no_text = MediaPolicy::new(vec![mt("application/pdf")], 10);
        assert!(matches!(
            no_text.decide(Some(&mt("text/plain")), None),
            Err(Refusal::NotAllowed { .. })
        ));
    }

    #[test]
    fn given_xml_declared_as_plain_text_then_it_is_kept_as_plain_text() {
        let policy = default_policy(1024);
        let (_, inspected) = inspect(
            &policy,
            Some("text/plain"),
            b"<?xml version=\"1.0\"?><a/>",
            4,
        )
        .unwrap();
        assert_eq!(inspected.media_type.as_str(), "text/plain");
    }

    #[test]
    fn given_chunks_then_every_byte_is_stored_once_in_order_with_its_digest() {
        let policy = default_policy(1 << 20);
        let mut content = PDF.to_vec();
        content.extend((0..200_000u32).map(|i| (i % 251) as u8));
        for chunk in [1, 7, 4096, MediaPolicy::SNIFF_BYTES, 1 << 20] {
            let (stored, inspected) =
                inspect(&policy, Some("application/pdf"), &content, chunk).unwrap();
            assert_eq!(stored, content, "chunk {chunk}");
            assert_eq!(inspected.size, content.len() as u64);
            assert_eq!(
                inspected.sha256.as_str(),
                hex::encode(Sha256::digest(&content))
            );
            assert_eq!(inspected.media_type.as_str(), "application/pdf");
        }
    }

    #[test]
    fn given_a_content_over_the_limit_then_it_is_refused_as_soon_as_it_passes_it() {
        let policy = default_policy(100);
        let mut inspection = Inspection::new(&policy, Some(mt("text/plain")));
        assert_eq!(inspection.push(&[b'a'; 60]), Ok(Step::Hold));
        assert_eq!(inspection.push(&[b'a'; 40]), Ok(Step::Hold));
        assert_eq!(inspection.push(b"a"), Err(Refusal::TooLarge { limit: 100 }));
        let exactly = inspect(&policy, Some("text/plain"), &[b'a'; 100], 10);
        assert_eq!(exactly.unwrap().1.size, 100);
    }

    #[test]
    fn given_a_large_content_then_the_limit_is_enforced_after_the_type_is_known() {
        let policy = default_policy(MediaPolicy::SNIFF_BYTES as u64 + 10);
        let mut content = PDF.to_vec();
        content.resize(MediaPolicy::SNIFF_BYTES + 11, b'x');
        let refusal = inspect(&policy, None, &content, 1000).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::TooLarge {
                limit: policy.max_bytes()
            }
        );
    }

    #[test]
    fn given_declared_plain_text_then_it_must_be_utf8_without_nul_to_the_last_byte() {
        let policy = default_policy(1 << 20);
        let text = "Resolución del expediente nº 7 — ñandú 😀\n".repeat(3000);
        for chunk in [1, 2, 3, 5, 4096] {
            let (stored, inspected) =
                inspect(&policy, Some("text/plain"), text.as_bytes(), chunk).unwrap();
            assert_eq!(stored, text.as_bytes());
            assert_eq!(inspected.media_type.as_str(), "text/plain");
        }
        let mut late_nul = text.clone().into_bytes();
        late_nul.push(0);
        assert_eq!(
            inspect(&policy, Some("text/plain"), &late_nul, 4096).unwrap_err(),
            Refusal::NotText("it contains NUL bytes")
        );
        let mut late_latin1 = text.clone().into_bytes();
        late_latin1.extend(b"caf\xe9 ok");
        assert_eq!(
            inspect(&policy, Some("text/plain"), &late_latin1, 4096).unwrap_err(),
            Refusal::NotText("it is not valid UTF-8")
        );
        let mut cut = text.into_bytes();
        cut.extend("ñ".as_bytes().first());
        assert_eq!(
            inspect(&policy, Some("text/plain"), &cut, 4096).unwrap_err(),
            Refusal::NotText("it ends in the middle of a character")
        );
    }

    #[test]
    fn given_an_empty_content_then_only_plain_text_accepts_it() {
        let policy = default_policy(10);
        let (stored, inspected) = inspect(&policy, Some("text/plain"), b"", 1).unwrap();
        assert!(stored.is_empty());
        assert_eq!(inspected.size, 0);
        assert!(inspect(&policy, Some("application/pdf"), b"", 1).is_err());
    }

    #[test]
    fn the_office_formats_are_told_apart_from_any_zip() {
        let policy = default_policy(1 << 20);
        let odt = zip(&[
            (
                "mimetype",
                b"application/vnd.oasis.opendocument.text".as_slice(),
            ),
            ("content.xml", b"<office:document-content/>"),
        ]);
        let docx = zip(&[
            ("[Content_Types].xml", b"<Types/>".as_slice()),
            ("_rels/.rels", b"<Relationships/>"),
            ("word/document.xml", b"<w:document/>"),
        ]);
        let plain_zip = zip(&[("notes.txt", b"hello".as_slice())]);
        let decided = |content: &[u8], declared: Option<&str>| {
            inspect(&policy, declared, content, 4096).map(|(_, i)| i.media_type)
        };
        assert_eq!(
            decided(&odt, None).unwrap().as_str(),
            "application/vnd.oasis.opendocument.text"
        );
        assert_eq!(
            decided(&docx, None).unwrap().as_str(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        assert!(matches!(
            decided(&plain_zip, Some("application/vnd.oasis.opendocument.text")),
            Err(Refusal::NotAllowed { .. })
        ));
        assert!(matches!(
            decided(
                &odt,
                Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
            ),
            Err(Refusal::Mismatch { .. })
        ));
        assert_eq!(
            decided(PNG, Some("image/png")).unwrap().as_str(),
            "image/png"
        );
        let reordered = zip(&[
            ("_rels/.rels", b"<Relationships/>".as_slice()),
            ("docProps/app.xml", b"<Properties/>"),
            ("word/document.xml", b"<w:document/>"),
            ("[Content_Types].xml", b"<Types/>"),
        ]);
        assert_eq!(
            decided(&reordered, Some(DOCX)).unwrap().as_str(),
            DOCX,
            "recognised whatever the order of its entries"
        );
        let xlsx = zip(&[
            ("[Content_Types].xml", b"<Types/>".as_slice()),
            ("_rels/.rels", b"<Relationships/>"),
            ("xl/workbook.xml", b"<workbook/>"),
        ]);
        assert!(matches!(
            decided(&xlsx, Some(DOCX)),
            Err(Refusal::NotAllowed { ref found, .. }) if found != DOCX
        ));
    }

    /// A minimal ZIP archive with `entries` stored uncompressed, laid out as
    /// office suites write them (local headers first).
    pub(crate) fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            out.extend(b"PK\x03\x04");
            out.extend(20u16.to_le_bytes()); // version needed
            out.extend(0u16.to_le_bytes()); // flags
            out.extend(0u16.to_le_bytes()); // stored
            out.extend([0u8; 4]); // time, date
            out.extend(0u32.to_le_bytes()); // crc (not checked by sniffing)
            out.extend((data.len() as u32).to_le_bytes()); // compressed size
            out.extend((data.len() as u32).to_le_bytes()); // size
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes()); // extra length
            out.extend(name.as_bytes());
            out.extend(*data);
        }
        out
    }
}
