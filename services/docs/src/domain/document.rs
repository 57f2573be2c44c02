//! A document of a file and its versions.

use chrono::{DateTime, Utc};

use super::media::MediaType;
use super::values::{Actor, DocumentId, DocumentName, FileId, Sha256Digest, UploadId};

/// Stored bytes: the content received by an upload, kept under its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The upload that received it; names it in the content store.
    pub id: UploadId,
    /// Its media type.
    pub media_type: MediaType,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
}

/// One version of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// 1, 2, 3... in the order they were added.
    pub number: u32,
    /// Its bytes.
    pub content: Content,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Who uploaded it.
    pub created_by: Actor,
}

/// A document of a case file: a name and its versions, the last one
/// current. Versions are never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its id.
    pub id: DocumentId,
    /// The file it belongs to.
    pub file_id: FileId,
    /// Its name, unique within the file.
    pub name: DocumentName,
    /// Its versions, oldest first.
    pub versions: Vec<Version>,
}

/// Facts about documents, each carrying the document's state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentEvent {
    /// A document was added to a file (with its version 1).
    Added(Document),
    /// A version was added to a document.
    VersionAdded(Document),
    /// A document and its content were removed.
    Removed {
        /// The document as it was.
        document: Document,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DocumentEvent {
    /// The versioned message type.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Added(_) => "docs.DocumentAdded.v1",
            Self::VersionAdded(_) => "docs.DocumentVersionAdded.v1",
            Self::Removed { .. } => "docs.DocumentRemoved.v1",
        }
    }

    /// The document the fact is about.
    pub fn document(&self) -> &Document {
        match self {
            Self::Added(d) | Self::VersionAdded(d) | Self::Removed { document: d, .. } => d,
        }
    }
}

impl Document {
    /// A new document of `file_id` whose version 1 is `content`.
    pub fn create(
        file_id: FileId,
        name: DocumentName,
        content: Content,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> (Self, DocumentEvent) {
        let document = Self {
            id: DocumentId::generate(),
            file_id,
            name,
            versions: vec![Version {
                number: 1,
                content,
                created_at: now,
                created_by: actor,
            }],
        };
        let event = DocumentEvent::Added(document.clone());
        (document, event)
    }

    /// Adds `content` as the next version.
    pub fn add_version(
        &mut self,
        content: Content,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> DocumentEvent {
        self.versions.push(Version {
            number: self.latest().number + 1,
            content,
            created_at: now,
            created_by: actor,
        });
        DocumentEvent::VersionAdded(self.clone())
    }

    /// Removes the document (the caller deletes its contents).
    pub fn remove(self, at: DateTime<Utc>) -> DocumentEvent {
        DocumentEvent::Removed { document: self, at }
    }

    /// The current version.
    pub fn latest(&self) -> &Version {
        self.versions
            .last()
            .expect("a document has at least one version")
    }

    /// Version `number`, if it exists.
    pub fn version(&self, number: u32) -> Option<&Version> {
        let index = usize::try_from(number).ok()?.checked_sub(1)?;
        self.versions.get(index).filter(|v| v.number == number)
    }

    /// The first version.
    pub fn first(&self) -> &Version {
        &self.versions[0]
    }

    /// How many versions it has; what a store compares to detect a
    /// concurrent change.
    pub fn version_count(&self) -> u32 {
        self.latest().number
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn content(byte: u8) -> Content {
        Content {
            id: UploadId::generate(),
            media_type: MediaType::parse("application/pdf").unwrap(),
            size: 10,
            sha256: Sha256Digest::from_bytes([byte; 32]),
        }
    }

    fn clerk() -> Actor {
        Actor {
            id: "u1".into(),
            name: "García, Ana".into(),
        }
    }

    #[test]
    fn given_a_new_document_then_it_has_version_one_and_is_announced_as_added() {
        let file = FileId(Uuid::now_v7());
        let (document, event) = Document::create(
            file,
            DocumentName::sanitise("acta.pdf").unwrap(),
            content(1),
            clerk(),
            Utc::now(),
        );
        assert_eq!(document.version_count(), 1);
        assert_eq!(document.latest().number, 1);
        assert_eq!(document.file_id, file);
        assert_eq!(event.message_type(), "docs.DocumentAdded.v1");
        assert_eq!(event.document(), &document);
    }

    #[test]
    fn given_a_document_when_versions_are_added_then_they_are_numbered_in_order() {
        let (mut document, _) = Document::create(
            FileId(Uuid::now_v7()),
            DocumentName::sanitise("acta.pdf").unwrap(),
            content(1),
            clerk(),
            Utc::now(),
        );
        let event = document.add_version(content(2), clerk(), Utc::now());
        assert_eq!(event.message_type(), "docs.DocumentVersionAdded.v1");
        assert_eq!(event.document().version_count(), 2);
        document.add_version(content(3), clerk(), Utc::now());
        let numbers: Vec<u32> = document.versions.iter().map(|v| v.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(document.latest().content.sha256, content(3).sha256);
        assert_eq!(
            document.version(2).unwrap().content.sha256,
            content(2).sha256
        );
        assert_eq!(document.first().number, 1);
        assert!(document.version(0).is_none());
        assert!(document.version(4).is_none());
    }

    #[test]
    fn given_a_document_when_removed_then_the_event_carries_it_as_it_was() {
        let (document, _) = Document::create(
            FileId(Uuid::now_v7()),
            DocumentName::sanitise("acta.pdf").unwrap(),
            content(1),
            clerk(),
            Utc::now(),
        );
        let event = document.clone().remove(Utc::now());
        assert_eq!(event.message_type(), "docs.DocumentRemoved.v1");
        assert_eq!(event.document(), &document);
    }
}
